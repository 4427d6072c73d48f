"""Shared fixtures: run the real launcher as a subprocess, exec the stand-in server, read its report."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.servers.secret_stores import SecretStore

TESTS = Path(__file__).parent
STANDIN = TESTS / "standin.py"

# Variables of the machine that would leak into the launcher under test and change its behaviour.
_AMBIENT = (
    "KMS_SECRET_BACKEND", "KMS_SECRETS_DIR", "CREDENTIALS_DIRECTORY", "KMS_LAUNCH_TIMEOUT",
    "VAULT_ADDR", "VAULT_TOKEN", "VAULT_NAMESPACE", "VAULT_ROLE_ID", "VAULT_SECRET_ID",
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
    "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_SSM", "AZURE_CLIENT_SECRET", "AZURE_TENANT_ID",
    "AZURE_CLIENT_ID", "COSMIAN_KMS_SECRET_TOKEN",
    "AZURE_AUTHORITY_HOST", "AZURE_KEYVAULT_URL", "AZURE_CLIENT_CERTIFICATE_PATH",
    "AZURE_CLIENT_CERTIFICATE_PASSWORD", "AZURE_FEDERATED_TOKEN_FILE", "MSAL_FORCE_REGION",
    "COSMIAN_KMS_CA_CERT", "COSMIAN_KMS_INSECURE_CERTS",
    "AWS_ENDPOINT_URL_SECRETS_MANAGER", "AWS_CA_BUNDLE", "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN",
)


@dataclass
class Launch:
    """One finished run of kms-launch: exit code, output, and the stand-in's report if it ran."""

    returncode: int
    stdout: str
    stderr: str
    report: dict[str, Any] | None
    launcher_pid: int
    elapsed: float = 0.0  # seconds from spawning the launcher to its exit

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def served(result: Launch) -> dict[str, Any]:
    """The config the stand-in server was given; fails with the launcher's stderr if none."""
    assert result.returncode == 0, result.stderr
    assert result.report is not None, result.stderr
    parsed: dict[str, Any] = result.report["parsed"]
    return parsed


def values_of(resolved: Mapping[Any, Any]) -> dict[Any, bytes]:
    """A backend's answer as {ref: bytes}: the bytes of each Secret the backend returned."""
    return {ref: secret.value for ref, secret in resolved.items()}


def open_backend(name: str, environ: Mapping[str, str], seconds: float = 10) -> Any:
    """The backend NAME, in-process, built from `environ` with a deadline `seconds` away."""
    from launcher import backends

    try:
        from launcher.deadline import Deadline
    except ImportError:  # before the deadline moved out of resolve.py
        from launcher.resolve import Deadline  # type: ignore[attr-defined,no-redef]
    return backends.load(name)(environ, Deadline(seconds))


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released): connections are refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def silent_listener() -> Iterator[str]:
    """http://127.0.0.1:PORT where the kernel completes connections and nobody ever answers."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        yield f"http://127.0.0.1:{silent.getsockname()[1]}"


def wait_for_file(path: Path, process: subprocess.Popen[Any], seconds: float = 30) -> str:
    """The text of `path` once the process under test has written it; fails at once if that
    process exits first (the long limit only matters when something hangs)."""
    until = time.monotonic() + seconds
    while not path.exists():
        if process.poll() is not None:
            pytest.fail(f"exited {process.returncode} before writing {path.name}")
        if time.monotonic() > until:
            pytest.fail(f"{path.name} was not written within {seconds:.0f} s")
        time.sleep(0.01)
    # Written with one write() by the waiting server; an empty read means it is mid-write.
    while not (text := path.read_text()):
        time.sleep(0.01)
    return text


def machine_env(directory: Path) -> dict[str, str]:
    """The machine's environment without anything that would steer the launcher, with a HOME
    and a TMPDIR of its own under `directory`."""
    env = {k: v for k, v in os.environ.items() if k not in _AMBIENT and not k.startswith("PYTEST_")}
    for name, sub in (("HOME", "home"), ("TMPDIR", "tmp")):  # no ~/.vault-token, ~/.aws, /tmp of the machine
        env[name] = str(directory / sub)
        (directory / sub).mkdir(exist_ok=True)
    return env


@pytest.fixture
def clean_env(tmp_path: Path) -> dict[str, str]:
    """The machine's environment without anything that would steer the launcher."""
    return machine_env(tmp_path)


def launch_process(
    directory: Path,
    report_name: str,
    args: Sequence[str],
    env: Mapping[str, str],
    command: Sequence[str] | None = None,
    timeout: float = 60,
    prefix: Sequence[str] = (),
) -> Launch:
    """Run `python -m launcher ARGS -- COMMAND` in `directory` (COMMAND: the stand-in, which
    writes its report to `directory/report_name`) and collect what happened."""
    report_path = directory / report_name
    full_env = {**env, "STANDIN_REPORT": str(report_path)}
    server = list(command) if command is not None else [sys.executable, str(STANDIN)]
    # `prefix` runs the launcher under another program (unshare, a network namespace).
    argv = [*prefix, sys.executable, "-m", "launcher", *args, "--", *server]
    started = time.monotonic()
    process = subprocess.Popen(
        argv, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=directory
    )
    stdout, stderr = process.communicate(timeout=timeout)
    elapsed = time.monotonic() - started
    report = json.loads(report_path.read_text()) if report_path.exists() else None
    return Launch(process.returncode, stdout, stderr, report, process.pid, elapsed)


@pytest.fixture
def run_launcher(tmp_path: Path, clean_env: dict[str, str]) -> Callable[..., Launch]:
    """Run `python -m launcher ARGS`; by default exec the stand-in server, which reports back."""
    counter = iter(range(1_000_000))

    def run(
        *args: str,
        env: Mapping[str, str] | None = None,
        command: list[str] | None = None,
        timeout: float = 60,
        prefix: list[str] | None = None,
    ) -> Launch:
        return launch_process(
            tmp_path, f"report-{next(counter)}.json", args, {**clean_env, **(env or {})},
            command, timeout, prefix or (),
        )

    return run


@pytest.fixture
def launch_backend(
    run_launcher: Callable[..., Launch], write_config: Callable[[str], Path]
) -> Callable[..., Callable[..., Launch]]:
    """launch_backend(NAME, default_env) -> launch(toml, env=None, *args, **kwargs): run
    `kms-launch --backend NAME` on that config, in `env` (default_env when None)."""

    def for_backend(name: str, default_env: Mapping[str, str] | None = None) -> Callable[..., Launch]:
        def launch(toml: str, env: Mapping[str, str] | None = None, *args: str, **kwargs: Any) -> Launch:
            path = write_config(toml)
            chosen = dict(default_env or {}) if env is None else dict(env)
            return run_launcher("--backend", name, "-c", str(path), *args, env=chosen, **kwargs)

        return launch

    return for_backend


# -- one start-up allowance for every deadline bound ----------------------------------------------

_STARTUP: dict[str, float] = {}
# The launcher's own start (interpreter, imports) runs before its deadline starts counting, so a
# bound "ends by --timeout + 1 s" measured from outside needs this much more. Measured, once per
# backend and session, as the slowest of a few runs that fail before any request (a malformed
# reference): the same imports and set-up, no network. Tripled: the load on a shared machine
# changes between the measurement and the test.
_STARTUP_RUNS = 3
_STARTUP_FACTOR = 3.0
_STARTUP_MALFORMED = {
    "vault": "secret://secret",
    "aws-ssm": "secret://not-a-region/x",
    "aws-sm": "secret://not-a-region/x",
    "azure-kv": "secret://x/keys/k",
    "cosmian-kms": "secret://127.0.0.1:1",
    "file": "secret://x#field",
}


@pytest.fixture(scope="session")
def startup_allowance(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], float]:
    """startup_allowance(BACKEND): seconds a launcher run may take beyond its --timeout + 1 s."""
    directory = tmp_path_factory.mktemp("startup")
    env = machine_env(directory)

    def allowance(backend: str) -> float:
        if backend not in _STARTUP:
            config = directory / f"{backend}.toml"
            config.write_text(f'x = "{_STARTUP_MALFORMED[backend]}"\n')
            runs = []
            for _ in range(_STARTUP_RUNS):
                started = time.monotonic()
                result = subprocess.run(
                    [sys.executable, "-m", "launcher", "--backend", backend, "-c", str(config),
                     "--", "/bin/true"],
                    env=env, capture_output=True, text=True, timeout=60,
                )
                runs.append(time.monotonic() - started)
                # 65 (malformed), or 78 where the backend wants credentials first: either way
                # the SDK was imported and nothing was sent.
                assert result.returncode in (65, 78), result.stderr
            _STARTUP[backend] = _STARTUP_FACTOR * max(runs)
        return _STARTUP[backend]

    return allowance


DEADLINE_GRACE = 1.0  # DESIGN: "the run ends by --timeout + 1 s, whatever the peer does"


@pytest.fixture
def attempts_deadline(startup_allowance: Callable[[str], float]) -> Callable[[str], str]:
    """attempts_deadline(BACKEND): a --timeout that surely leaves time for attempts after the
    launcher's start-up (which counts against the deadline): the measured allowance plus 1 s.
    For tests of what the report says the backend answered; a run whose deadline passes while
    it is still importing its SDK has nothing to report but the deadline."""

    def seconds(backend: str) -> str:
        return f"{startup_allowance(backend) + 1.0:.1f}"

    return seconds


def without_launch_record(stderr: str) -> str:
    """stderr without the one line a successful launch logs unless -q (tests/test_record.py)."""
    return "".join(
        line for line in stderr.splitlines(keepends=True)
        if not line.startswith("kms-launch: launch record: ")
    )


@pytest.fixture
def ends_by_deadline(startup_allowance: Callable[[str], float]) -> Callable[[Launch, str, float], None]:
    """ends_by_deadline(launch, backend, timeout): the run ended by its deadline plus one second,
    plus the measured start-up that runs before the deadline is set."""

    def check(result: Launch, backend: str, timeout: float) -> None:
        bound = timeout + DEADLINE_GRACE + startup_allowance(backend)
        assert result.elapsed < bound, f"ran {result.elapsed:.2f}s; bound {bound:.2f}s"

    return check


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[[str], Path]:
    """Write TOML text to a config file and return its path."""

    def write(text: str, name: str = "kms.toml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return write


@pytest.fixture
def secrets_dir(tmp_path: Path) -> Path:
    path = tmp_path / "secrets"
    path.mkdir()
    return path


# -- secret stores for the shared backend contract test (tests/test_backend_contract.py) --------
# Each store is a fixture named `<backend>_store` yielding a SecretStore; add new backends to
# CONTRACT_BACKENDS below and their fixture module to the imports.

CONTRACT_BACKENDS = ["file", "env", "vault", "aws-ssm", "aws-sm", "azure-kv", "cosmian-kms"]


@pytest.fixture
def file_store(secrets_dir: Path) -> SecretStore:
    from tests.servers.secret_stores import FileStore

    return FileStore(secrets_dir)


@pytest.fixture
def env_store() -> SecretStore:
    from tests.servers.secret_stores import EnvStore

    return EnvStore()


# -- vault (OpenBao) and aws-ssm (moto): real servers, started once per session ---------------


@pytest.fixture(scope="session")
def openbao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """An OpenBao dev server over HTTP (root token in `.token`, KV v2 at `secret/`)."""
    from tests.servers.openbao import OpenBao

    with OpenBao(tmp_path_factory.mktemp("openbao")) as server:
        yield server


@pytest.fixture(scope="session")
def openbao_tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """An OpenBao dev server over HTTPS; its CA is at `.ca`."""
    from tests.servers.openbao import OpenBao

    with OpenBao(tmp_path_factory.mktemp("openbao-tls"), tls=True) as server:
        yield server


@pytest.fixture(scope="session")
def moto_ssm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """moto's server, warmed up for SSM."""
    from tests.servers.moto_ssm import MotoServer

    with MotoServer(tmp_path_factory.mktemp("moto")) as server:
        yield server


@pytest.fixture
def vault_store(openbao: Any) -> SecretStore:
    from tests.servers.openbao import VaultStore

    return VaultStore(openbao)


@pytest.fixture
def aws_ssm_store(moto_ssm: Any, monkeypatch: pytest.MonkeyPatch) -> SecretStore:
    from tests.servers.moto_ssm import SsmStore

    # botocore takes its endpoint from the process environment only.
    monkeypatch.setenv("AWS_ENDPOINT_URL_SSM", moto_ssm.url)
    return SsmStore(moto_ssm)


@pytest.fixture
def aws_sm_store(moto_ssm: Any, monkeypatch: pytest.MonkeyPatch) -> SecretStore:
    from tests.servers.moto_ssm import SecretsManagerStore

    # botocore takes its endpoint from the process environment only.
    monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", moto_ssm.url)
    return SecretsManagerStore(moto_ssm)


# -- azure-kv and cosmian-kms: HTTPS fakes (no real service runs here) ---------------------------


@pytest.fixture(scope="session")
def fake_ca(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A private CA and one server certificate for every loopback name the fakes listen on."""
    from tests.servers.tls import Authority

    directory = tmp_path_factory.mktemp("fake-ca")
    authority = Authority.create(directory, "fake")
    server = authority.issue(directory, ["localhost", "127.0.0.1", "127.0.0.2", "::1"])
    return authority, server


@pytest.fixture(scope="session")
def azure_client_certificate(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The certificate registered on the fake Azure AD application (RSA, for PS256 assertions)."""
    from tests.servers.tls import ClientCertificate

    return ClientCertificate.create(tmp_path_factory.mktemp("azure-app"), "kms-launch-app")


@pytest.fixture
def azure_fake(fake_ca: Any, azure_client_certificate: Any) -> Iterator[Any]:
    """Azure AD and Key Vault fakes over HTTPS on 127.0.0.1; `.environ()` points a client at them."""
    from tests.servers.azure_fake import AzureFake

    authority, server = fake_ca
    with AzureFake(server, authority.path, azure_client_certificate) as fake:
        yield fake


@pytest.fixture
def cosmian_fake(fake_ca: Any) -> Iterator[Any]:
    """A Cosmian KMS fake over HTTPS on 127.0.0.2: not a plain-http name, so the launcher uses TLS."""
    from tests.servers.cosmian_fake import CosmianFake

    authority, server = fake_ca
    with CosmianFake("127.0.0.2", server, ca_path=authority.path) as fake:
        yield fake


@pytest.fixture
def cosmian_plain_fake() -> Iterator[Any]:
    """A Cosmian KMS fake over plain HTTP on 127.0.0.1, the one name (with localhost, [::1])
    the launcher talks to in clear."""
    from tests.servers.cosmian_fake import CosmianFake

    with CosmianFake("127.0.0.1") as fake:
        yield fake


@pytest.fixture
def azure_kv_store(azure_fake: Any) -> SecretStore:
    from tests.servers.azure_fake import AzureStore

    return AzureStore(azure_fake)


@pytest.fixture
def cosmian_kms_store(cosmian_fake: Any) -> SecretStore:
    from tests.servers.cosmian_fake import CosmianStore

    cosmian_fake.token = "contract-token"
    return CosmianStore(cosmian_fake)


# -- platform identities: no test reaches a real metadata address ----------------------------------

# msal's managed identity reads its endpoint from the process environment and, when none is set,
# asks the Azure VM instance metadata service at 169.254.169.254. Every test process and every
# launcher it starts gets, instead, a loopback port nobody listens on (the discard port), unless a
# test points it at a fake. Variables that would pick another identity source are removed.
NO_INSTANCE_METADATA = "http://127.0.0.1:9"
_IDENTITY_AMBIENT = (
    "IDENTITY_ENDPOINT", "IDENTITY_HEADER", "IDENTITY_SERVER_THUMBPRINT", "IMDS_ENDPOINT",
    "MSI_ENDPOINT", "MSI_SECRET", "AZURE_TOKEN_CREDENTIALS",
    "VAULT_AUTH_METHOD", "VAULT_AUTH_ROLE", "VAULT_AUTH_MOUNT", "VAULT_JWT_FILE",
)  # fmt: skip


@pytest.fixture(autouse=True, scope="session")
def no_instance_metadata() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        for name in _IDENTITY_AMBIENT:
            patch.delenv(name, raising=False)
        patch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", NO_INSTANCE_METADATA)
        yield
