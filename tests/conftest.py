"""Shared fixtures: run the real launcher as a subprocess, exec the stand-in server, read its report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
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
)


@dataclass
class Launch:
    """One finished run of kms-launch: exit code, output, and the stand-in's report if it ran."""

    returncode: int
    stdout: str
    stderr: str
    report: dict[str, Any] | None
    launcher_pid: int

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


@pytest.fixture
def clean_env(tmp_path: Path) -> dict[str, str]:
    """The machine's environment without anything that would steer the launcher."""
    env = {k: v for k, v in os.environ.items() if k not in _AMBIENT and not k.startswith("PYTEST_")}
    env["HOME"] = str(tmp_path / "home")  # no ~/.vault-token, ~/.aws of the machine
    (tmp_path / "home").mkdir(exist_ok=True)
    return env


@pytest.fixture
def run_launcher(tmp_path: Path, clean_env: dict[str, str]) -> Callable[..., Launch]:
    """Run `python -m launcher ARGS`; by default exec the stand-in server, which reports back."""
    counter = iter(range(1_000_000))

    def run(
        *args: str,
        env: Mapping[str, str] | None = None,
        command: list[str] | None = None,
        timeout: float = 60,
    ) -> Launch:
        report_path = tmp_path / f"report-{next(counter)}.json"
        full_env = {**clean_env, **(env or {}), "STANDIN_REPORT": str(report_path)}
        server = command if command is not None else [sys.executable, str(STANDIN)]
        argv = [sys.executable, "-m", "launcher", *args, "--", *server]
        process = subprocess.Popen(
            argv, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            cwd=tmp_path,
        )
        stdout, stderr = process.communicate(timeout=timeout)
        report = json.loads(report_path.read_text()) if report_path.exists() else None
        return Launch(process.returncode, stdout, stderr, report, process.pid)

    return run


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

CONTRACT_BACKENDS = ["file", "env", "vault", "aws-ssm", "azure-kv", "cosmian-kms"]


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
