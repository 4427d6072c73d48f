"""What goes wrong on our own side gets a clear line and its documented code, never exit 70:
credential files that are FIFOs, devices, huge or not text; the system refusing memfds or file
descriptors; a report that cannot be written; numbers that are not numbers; signals at start-up;
and what the server can still reach after exec."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from launcher import cli, deadline, refs
from launcher.errors import BackendUnavailable, Failures
from tests.conftest import Launch, served

# -- 3. credential files are read like the config -------------------------------------------------

TOKEN_FILE_BYTES = 2 * 1024 * 1024  # past the 1 MiB cap on a credential file


def _make(kind: str, path: Path) -> None:
    if kind == "a FIFO":
        os.mkfifo(path)
    elif kind == "a device":
        path.symlink_to("/dev/zero")
    elif kind == "huge":
        path.write_bytes(b"t" * TOKEN_FILE_BYTES)
    elif kind == "not UTF-8":
        path.write_bytes(b"hvs.\xff\xfe-token-bytes")
    else:
        raise AssertionError(kind)


# (backend, the variable or file name, how the file is found, a reference of that backend)
CREDENTIAL_FILES: dict[str, tuple[str, str, str]] = {
    "$CREDENTIALS_DIRECTORY/vault-token": ("vault", "VAULT_TOKEN", "secret://secret/x"),
    "~/.vault-token": ("vault", "VAULT_TOKEN", "secret://secret/x"),
    "$CREDENTIALS_DIRECTORY/cosmian-kms-secret-token": (
        "cosmian-kms", "COSMIAN_KMS_SECRET_TOKEN", "secret://127.0.0.1:1/uid",
    ),
    "$CREDENTIALS_DIRECTORY/azure-client-secret": (
        "azure-kv", "AZURE_CLIENT_SECRET", "secret://kms/secrets/db",
    ),
    "AZURE_FEDERATED_TOKEN_FILE": ("azure-kv", "AZURE_FEDERATED_TOKEN_FILE", "secret://kms/secrets/db"),
    "AZURE_CLIENT_CERTIFICATE_PATH": (
        "azure-kv", "AZURE_CLIENT_CERTIFICATE_PATH", "secret://kms/secrets/db",
    ),
    "AWS_WEB_IDENTITY_TOKEN_FILE": ("aws-ssm", "AWS_WEB_IDENTITY_TOKEN_FILE", "secret://us-east-1/x"),
    "AWS_SHARED_CREDENTIALS_FILE": ("aws-ssm", "AWS_SHARED_CREDENTIALS_FILE", "secret://us-east-1/x"),
    "VAULT_CACERT": ("vault", "VAULT_CACERT", "secret://secret/x"),
    "COSMIAN_KMS_CA_CERT": ("cosmian-kms", "COSMIAN_KMS_CA_CERT", "secret://kms.example:1/uid"),
}  # fmt: skip


def _placed(where: str, tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """The path the credential file goes to and the environment that points the backend at it."""
    backend, variable, _ = CREDENTIAL_FILES[where]
    if where.startswith("$CREDENTIALS_DIRECTORY/"):
        directory = tmp_path / "credentials"
        directory.mkdir()
        return directory / where.split("/", 1)[1], {"CREDENTIALS_DIRECTORY": str(directory)}
    if where == "~/.vault-token":
        return tmp_path / "home" / ".vault-token", {}
    path = tmp_path / "credential-file"
    env = {variable: str(path)}
    if backend == "azure-kv":
        env.update(AZURE_TENANT_ID="tenant", AZURE_CLIENT_ID="client")
    if variable == "AWS_WEB_IDENTITY_TOKEN_FILE":
        env["AWS_ROLE_ARN"] = "arn:aws:iam::123456789012:role/kms"
    if variable == "VAULT_CACERT":
        env.update(VAULT_ADDR="https://127.0.0.1:1", VAULT_TOKEN="t")
    return path, env


def _cases() -> list[Any]:
    return [
        pytest.param(where, kind, marks=[] if kind == "a FIFO" else [pytest.mark.slow])
        for where in CREDENTIAL_FILES
        for kind in ("a FIFO", "a device", "huge", "not UTF-8")
    ]


@pytest.mark.parametrize(("where", "kind"), _cases())
def test_a_credential_file_that_is_not_a_small_regular_text_file_is_a_clear_78(
    where: str, kind: str, tmp_path: Path, launch_backend: Callable[..., Callable[..., Launch]]
) -> None:
    backend, variable, reference = CREDENTIAL_FILES[where]
    path, env = _placed(where, tmp_path)
    _make(kind, path)
    result = launch_backend(backend)(f'a = "{reference}"\n', env, "--timeout", "20")
    assert result.returncode == 78, result.stderr
    assert variable in result.stderr or str(path) in result.stderr
    assert result.elapsed < 20, "waited on the file instead of refusing it"
    assert "Traceback" not in result.stderr
    assert "internal error" not in result.stderr
    assert "\\xff" not in result.stderr
    assert "0xff" not in result.stderr
    assert "tttttttt" not in result.stderr


# -- 6. local resource errors are mapped ----------------------------------------------------------


def test_a_secret_file_at_a_key_path_past_the_memfd_name_limit_is_delivered(
    secrets_dir: Path, launch_backend: Callable[..., Callable[..., Launch]]
) -> None:
    (secrets_dir / "key").write_bytes(b"-----BEGIN PRIVATE KEY-----\n")
    table = ".".join(["very_long_table_name_for_the_memfd_limit"] * 8)  # 327 bytes of key path
    config = f'[{table}]\ntls_key_file = "secret+file://key"\n'
    result = launch_backend("file")(config, {"KMS_SECRETS_DIR": str(secrets_dir)})
    node: Any = served(result)
    for part in table.split("."):
        node = node[part]
    assert node["tls_key_file"].startswith("/proc/self/fd/")


def test_running_out_of_file_descriptors_for_secret_files_exits_71_with_a_hint(
    secrets_dir: Path, write_config: Callable[..., Path], clean_env: dict[str, str]
) -> None:
    lines = []
    for index in range(40):
        (secrets_dir / f"k{index}").write_bytes(b"key bytes")
        lines.append(f'k{index} = "secret+file://k{index}"')
    config = write_config("\n".join(lines) + "\n")

    def few_descriptors() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (30, 30))

    result = subprocess.run(
        [sys.executable, "-m", "launcher", "--backend", "file", "-c", str(config), "--", "/bin/true"],
        env={**clean_env, "KMS_SECRETS_DIR": str(secrets_dir)},
        capture_output=True, text=True, preexec_fn=few_descriptors, timeout=60,
    )  # fmt: skip
    assert result.returncode == 71, result.stderr
    assert "Too many open files (raise the open-file limit: LimitNOFILE= or ulimit -n)" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_file_backend_read_error_names_the_reference_and_exits_69(
    launch_backend: Callable[..., Callable[..., Launch]],
) -> None:
    # /proc/self/mem is a regular file that refuses to be read at offset 0 (EIO).
    result = launch_backend("file")('a = "secret://mem"\n', {"KMS_SECRETS_DIR": "/proc/self"})
    assert result.returncode == 69, result.stderr
    assert "kms-launch: a: secret://mem: " in result.stderr
    assert "Input/output error" in result.stderr


@pytest.fixture
def check_config(secrets_dir: Path, write_config: Callable[..., Path]) -> Path:
    for index in range(2000):  # more lines than a pipe buffer holds
        (secrets_dir / f"s{index}").write_text("value")
    return write_config("".join(f'k{i} = "secret://s{i}"\n' for i in range(2000)))


def test_check_writing_into_a_closed_pipe_exits_74_with_one_line(
    check_config: Path, secrets_dir: Path, clean_env: dict[str, str]
) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # `kms-launch --check | head -0`
    try:
        result = subprocess.run(
            [sys.executable, "-m", "launcher", "--check", "--backend", "file", "-c", str(check_config)],
            env={**clean_env, "KMS_SECRETS_DIR": str(secrets_dir)},
            stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=60,
        )  # fmt: skip
    finally:
        os.close(write_end)
    assert result.returncode == 74, result.stderr
    assert result.stderr == "kms-launch: cannot write to standard output: Broken pipe\n"


def test_check_writing_to_a_full_disk_exits_74(
    check_config: Path, secrets_dir: Path, clean_env: dict[str, str]
) -> None:
    with open("/dev/full", "w") as full:
        result = subprocess.run(
            [sys.executable, "-m", "launcher", "--check", "--backend", "file", "-c", str(check_config)],
            env={**clean_env, "KMS_SECRETS_DIR": str(secrets_dir)},
            stdout=full, stderr=subprocess.PIPE, text=True, timeout=60,
        )  # fmt: skip
    assert result.returncode == 74, result.stderr
    assert "No space left on device" in result.stderr
    assert "Traceback" not in result.stderr


# -- 7. numbers stay sane -------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["nan", "inf", "NaN", "Infinity"])
def test_a_timeout_that_is_not_a_finite_number_is_a_usage_error(
    value: str, run_launcher: Callable[..., Launch], write_config: Callable[..., Path]
) -> None:
    config = write_config("a = 1\n")
    by_option = run_launcher("--timeout", value, "-c", str(config))
    by_variable = run_launcher("-c", str(config), env={"KMS_LAUNCH_TIMEOUT": value})
    for result in (by_option, by_variable):
        assert result.returncode == 2, result.stderr
        assert "not a finite number of seconds" in result.stderr
        assert result.report is None


def test_the_backoff_stays_finite_however_many_attempts() -> None:
    # Attempt 1025 once raised OverflowError (2 ** 1024 as a float).
    for tries in (1, 10, 1025, 10**6):
        assert 0 <= deadline.backoff(tries) <= deadline.BACKOFF_CAP


def test_a_port_of_thousands_of_digits_is_a_malformed_reference(
    run_launcher: Callable[..., Launch], write_config: Callable[..., Path]
) -> None:
    config = write_config(f'a = "secret://kms.example:{"9" * 5000}/uid"\n')
    result = run_launcher("--backend", "cosmian-kms", "-c", str(config))
    assert result.returncode == 65, result.stderr
    assert "out of range" in result.stderr
    assert len(result.stderr) < 400  # the digits are cut, not echoed 5000 times


# -- 8. reports say what happened -----------------------------------------------------------------


def test_every_local_failure_is_reported_together_before_anything_remote(
    run_launcher: Callable[..., Launch], tmp_path: Path
) -> None:
    result = run_launcher(
        "--backend", "vualt", "-c", str(tmp_path / "missing.toml"), command=["no-such-kms"]
    )
    assert result.returncode == 2  # usage wins: the others may be consequences of the typo
    assert result.stderr.splitlines() == [
        "kms-launch: unknown backend 'vualt'; choose one of: vault, aws-ssm, aws-sm, azure-kv,"
        " cosmian-kms, file, env",
        "kms-launch: command 'no-such-kms' not found on PATH",
        f"kms-launch: {tmp_path / 'missing.toml'}: no such file",
    ]


def test_an_empty_backend_name_is_a_usage_error(
    run_launcher: Callable[..., Launch], write_config: Callable[..., Path]
) -> None:
    result = run_launcher("--backend", "", "-c", str(write_config('a = "secret://x"\n')))
    assert result.returncode == 2, result.stderr
    assert "unknown backend ''" in result.stderr


def test_sigint_while_the_launcher_is_still_importing_exits_130_without_a_traceback(
    write_config: Callable[..., Path], clean_env: dict[str, str]
) -> None:
    """Seen from the shell that started it: kms-launch dies by the signal itself (so systemd
    counts a stop as clean), which a shell reports as 128 + 2."""
    config = write_config("a = 1\n")
    # -X importtime reports each import on stderr as it completes: once launcher.launch is in
    # (the handlers are installed right after it), interrupt during the imports that follow.
    shell = subprocess.Popen(
        ["sh", "-c", '"$@"; echo "status $?"', "sh",
         sys.executable, "-X", "importtime", "-m", "launcher", "-c", str(config), "--", "/bin/true"],
        env=clean_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert shell.stderr is not None
    assert shell.stdout is not None
    for line in shell.stderr:
        if line.rstrip().endswith("launcher.launch"):
            break
    [launcher] = psutil.Process(shell.pid).children()
    launcher.send_signal(signal.SIGINT)
    rest = shell.stderr.read()
    assert shell.stdout.read() == "status 130\n"
    assert shell.wait(timeout=30) == 0
    assert "Traceback" not in rest
    assert "KeyboardInterrupt" not in rest


# -- 9. the threat model is true ------------------------------------------------------------------


@pytest.fixture
def credentials_directory(tmp_path: Path) -> Iterator[Path]:
    directory = tmp_path / "credentials"
    directory.mkdir()
    return directory


def test_the_server_loses_credentials_directory_when_the_launcher_read_a_credential_there(
    credentials_directory: Path, openbao: Any, launch_backend: Callable[..., Callable[..., Launch]]
) -> None:
    openbao.put("threat/model", value="from-vault")
    (credentials_directory / "vault-token").write_text(openbao.token)
    env = {"VAULT_ADDR": openbao.url, "CREDENTIALS_DIRECTORY": str(credentials_directory)}
    result = launch_backend("vault")('a = "secret://secret/threat/model"\n', env)
    assert served(result)["a"] == "from-vault"
    assert result.report is not None
    assert "CREDENTIALS_DIRECTORY" not in result.report["environ"]


def test_keep_env_keeps_credentials_directory_for_the_server(
    credentials_directory: Path, openbao: Any, launch_backend: Callable[..., Callable[..., Launch]]
) -> None:
    openbao.put("threat/kept", value="kept")
    (credentials_directory / "vault-token").write_text(openbao.token)
    env = {"VAULT_ADDR": openbao.url, "CREDENTIALS_DIRECTORY": str(credentials_directory)}
    result = launch_backend("vault")(
        'a = "secret://secret/threat/kept"\n', env, "--keep-env", "CREDENTIALS_DIRECTORY"
    )
    assert served(result)["a"] == "kept"
    assert result.report is not None
    assert result.report["environ"]["CREDENTIALS_DIRECTORY"] == str(credentials_directory)


def test_credentials_directory_stays_when_the_launcher_did_not_use_it(
    credentials_directory: Path, secrets_dir: Path, launch_backend: Callable[..., Callable[..., Launch]]
) -> None:
    (secrets_dir / "s").write_text("v")
    env = {"KMS_SECRETS_DIR": str(secrets_dir), "CREDENTIALS_DIRECTORY": str(credentials_directory)}
    result = launch_backend("file")('a = "secret://s"\n', env)
    assert served(result)["a"] == "v"
    assert result.report is not None
    assert result.report["environ"]["CREDENTIALS_DIRECTORY"] == str(credentials_directory)


def test_the_watchdog_reports_every_reference_when_resolution_outlives_the_deadline() -> None:
    clock = deadline.Deadline(0.2)
    started = time.monotonic()
    with pytest.raises(BackendUnavailable, match="late"):
        deadline.within(clock, lambda: time.sleep(30), lambda: BackendUnavailable("late"))
    assert time.monotonic() - started < 0.2 + deadline.GRACE + 2  # not the 30 s it sleeps


# -- 5. misconfiguration is 78 with the variable named --------------------------------------------

AZURE_IDENTITY = {"AZURE_TENANT_ID": "tenant", "AZURE_CLIENT_ID": "client", "AZURE_CLIENT_SECRET": "s"}
MISCONFIGURED: dict[str, tuple[str, dict[str, str], str, str]] = {
    "VAULT_ADDR that is not a URL": (
        "vault", {"VAULT_ADDR": "https://[::1", "VAULT_TOKEN": "t"}, "secret://secret/x", "VAULT_ADDR",
    ),
    "VAULT_ADDR of another scheme": (
        "vault", {"VAULT_ADDR": "ftp://vault", "VAULT_TOKEN": "t"}, "secret://secret/x", "VAULT_ADDR",
    ),
    "a VAULT_TOKEN a header cannot carry": (
        "vault", {"VAULT_ADDR": "http://127.0.0.1:1", "VAULT_TOKEN": "hvs.€"}, "secret://secret/x",
        "VAULT_TOKEN",
    ),
    "a VAULT_NAMESPACE with a newline": (
        "vault", {"VAULT_ADDR": "http://127.0.0.1:1", "VAULT_TOKEN": "t", "VAULT_NAMESPACE": "a\nb"},
        "secret://secret/x", "VAULT_NAMESPACE",
    ),
    "AWS_ENDPOINT_URL that is not a URL": (
        "aws-ssm", {"AWS_ENDPOINT_URL": "https://[::1", "AWS_ACCESS_KEY_ID": "a",
                    "AWS_SECRET_ACCESS_KEY": "b"}, "secret://us-east-1/x", "AWS_ENDPOINT_URL",
    ),
    "AZURE_AUTHORITY_HOST that is not a URL": (
        "azure-kv", {**AZURE_IDENTITY, "AZURE_AUTHORITY_HOST": "https://[::1"},
        "secret://kms/secrets/x", "AZURE_AUTHORITY_HOST",
    ),
    "AZURE_KEYVAULT_URL that is not a URL": (
        "azure-kv", {**AZURE_IDENTITY, "AZURE_KEYVAULT_URL": "https://[::1"},
        "secret://kms/secrets/x", "AZURE_KEYVAULT_URL",
    ),
    "a COSMIAN_KMS_SECRET_TOKEN a header cannot carry": (
        "cosmian-kms", {"COSMIAN_KMS_SECRET_TOKEN": "tok€n"}, "secret://127.0.0.1:1/uid",
        "COSMIAN_KMS_SECRET_TOKEN",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(MISCONFIGURED))
def test_misconfiguration_is_78_naming_the_variable_at_every_reference(
    case: str, launch_backend: Callable[..., Callable[..., Launch]]
) -> None:
    backend, env, reference, variable = MISCONFIGURED[case]
    result = launch_backend(backend)(f'a = "{reference}"\n', env, "--timeout", "20")
    assert result.returncode == 78, result.stderr
    assert result.stderr.startswith(f"kms-launch: a: {reference}: ")
    assert variable in result.stderr
    assert "€" not in result.stderr
    assert "internal error" not in result.stderr


def test_a_run_cut_off_by_the_watchdog_still_says_what_the_backend_answered() -> None:
    clock = deadline.Deadline(0.3)

    def answered_then_stuck() -> None:
        def attempt(timeout: float) -> None:
            raise BackendUnavailable("Vault answered HTTP 500 (secret/x)")

        with contextlib.suppress(BackendUnavailable):
            deadline.retry(deadline.Deadline(0.1), attempt)
        time.sleep(5)  # then stuck where no socket window reaches (a name lookup, say)

    wanted = [refs.parse("secret://secret/x")]
    with pytest.raises(Failures) as caught:
        deadline.within(clock, answered_then_stuck, lambda: cli._too_late("vault", wanted, clock))
    [error] = caught.value.errors
    assert error.ref == "secret://secret/x"
    assert error.message.startswith("Vault answered HTTP 500 (secret/x); then no answer from the vault backend")
