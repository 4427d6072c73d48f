"""End to end: the real launcher execs the stand-in server, which reports what it received."""

from __future__ import annotations

import base64
import errno
import fcntl
import os
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from tests.conftest import STANDIN, Launch, launch_process, machine_env, wait_for_file

ALL_SEALS = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE
F_SEAL_EXEC = 0x0020  # Linux 6.3+: set by MFD_NOEXEC_SEAL, the memfd can never become executable
MFD_NOEXEC_SEAL = 0x0008

CONFIG = """\
# served by kms-launch
[db]
database_url = "postgresql://kms:secret://db/password@db.internal:5432/kms"

[http]
port = 9998
api_token_id = "secret://http/token"
"""


def lay_out(secrets_dir: Path) -> None:
    (secrets_dir / "db").mkdir(exist_ok=True)
    (secrets_dir / "db" / "password").write_text("hunter2-db\n")
    (secrets_dir / "http").mkdir(exist_ok=True)
    (secrets_dir / "http" / "token").write_text("tok-3f9a")


def launch_file_backend(
    run_launcher: Callable[..., Launch],
    write_config: Callable[[str], Path],
    secrets_dir: Path,
    *extra: str,
    env: dict[str, str] | None = None,
    command: list[str] | None = None,
) -> Launch:
    lay_out(secrets_dir)
    path = write_config(CONFIG)
    return run_launcher(
        "--backend", "file", "-c", str(path), *extra,
        env={"KMS_SECRETS_DIR": str(secrets_dir), **(env or {})},
        command=command,
    )


@pytest.fixture(scope="module")
def served_launch(tmp_path_factory: pytest.TempPathFactory) -> tuple[Launch, Path, set[Path]]:
    """One launch of the file backend, shared by the tests that only read what the server got:
    (the launch, its directory, what was in that directory before it ran)."""
    directory = tmp_path_factory.mktemp("launch")
    env = machine_env(directory)  # HOME and TMPDIR in here too: all the launcher could write to
    secrets_dir = directory / "secrets"
    secrets_dir.mkdir()
    lay_out(secrets_dir)
    (directory / "kms.toml").write_text(CONFIG)
    before = set(directory.rglob("*"))
    launch = launch_process(
        directory, "report.json",
        ["--backend", "file", "-c", str(directory / "kms.toml")],
        {**env, "KMS_SECRETS_DIR": str(secrets_dir)},
    )
    assert launch.returncode == 0, launch.stderr
    return launch, directory, before


@pytest.fixture
def launch(served_launch: tuple[Launch, Path, set[Path]]) -> Launch:
    return served_launch[0]


def test_the_server_gets_the_resolved_config(launch: Launch) -> None:
    assert launch.report["parsed"] == {
        "db": {"database_url": "postgresql://kms:hunter2-db@db.internal:5432/kms"},
        "http": {"port": 9998, "api_token_id": "tok-3f9a"},
    }
    assert launch.report["config_text"].startswith("# served by kms-launch\n[db]\n")


def test_the_server_runs_in_the_launchers_process(launch: Launch) -> None:
    assert launch.report["pid"] == launch.launcher_pid


def test_the_config_is_a_sealed_memfd_passed_as_dash_c(launch: Launch) -> None:
    argv = launch.report["argv"]
    assert argv[-2] == "-c"
    assert argv[-1].startswith("/proc/self/fd/")
    config = launch.report["config"]
    assert config["link"] == "/memfd:kms.toml (deleted)"
    assert config["seals"] & ALL_SEALS == ALL_SEALS


def _kernel_has_noexec_seal() -> bool:
    try:
        os.close(os.memfd_create("probe", os.MFD_ALLOW_SEALING | MFD_NOEXEC_SEAL))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _kernel_has_noexec_seal(), reason="kernel older than 6.3: no MFD_NOEXEC_SEAL")
def test_the_memfd_can_never_be_made_executable_where_the_kernel_allows(launch: Launch) -> None:
    config = launch.report["config"]
    assert config["seals"] & F_SEAL_EXEC == F_SEAL_EXEC
    assert stat.S_IMODE(config["mode"]) & 0o111 == 0


def test_the_memfd_can_be_reopened_and_reread(launch: Launch) -> None:
    assert launch.report["config"]["reread_equal"] is True


def test_the_sealed_memfd_refuses_writes_and_truncation(launch: Launch) -> None:
    assert launch.report["config"]["write_errno"] == errno.EPERM
    assert launch.report["config"]["truncate_errno"] == errno.EPERM


def test_no_file_is_created_where_the_launcher_could_write(
    served_launch: tuple[Launch, Path, set[Path]],
) -> None:
    # Its working directory, HOME, TMPDIR, the config's and the secrets' directories all lie in
    # `directory`; tests/test_hygiene.py traces every file-creating system call besides.
    _, directory, before = served_launch
    created = set(directory.rglob("*")) - before
    assert [p.name for p in created] == ["report.json"]  # the stand-in's own report, nothing else


def test_a_config_placeholder_argument_receives_the_path(run_launcher, write_config, secrets_dir) -> None:
    launch = launch_file_backend(
        run_launcher, write_config, secrets_dir,
        command=[sys.executable, str(STANDIN), "--config={config}", "{config}"],
        env={"STANDIN_CONFIG_ARG": "2"},
    )
    argv = launch.report["argv"]
    assert argv[1].startswith("--config=/proc/self/fd/")
    assert argv[2] == argv[1].removeprefix("--config=")
    assert "-c" not in argv
    assert launch.report["parsed"]["http"]["api_token_id"] == "tok-3f9a"


def test_credential_variables_are_scrubbed_from_the_servers_environment(
    run_launcher, write_config, secrets_dir
) -> None:
    credentials = {
        "KMS_SECRET_BACKEND": "file", "VAULT_TOKEN": "v", "VAULT_SECRET_ID": "v",
        "AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "a", "AWS_SESSION_TOKEN": "a",
        "AZURE_CLIENT_SECRET": "z", "AZURE_CLIENT_CERTIFICATE_PASSWORD": "z",
        "COSMIAN_KMS_SECRET_TOKEN": "c",
    }
    launch = launch_file_backend(
        run_launcher, write_config, secrets_dir, env={**credentials, "UNRELATED": "kept"}
    )
    environ = launch.report["environ"]
    assert not set(credentials) & set(environ)
    assert environ["UNRELATED"] == "kept"
    assert environ["KMS_SECRETS_DIR"] == str(secrets_dir)


def test_keep_env_keeps_a_named_credential(run_launcher, write_config, secrets_dir) -> None:
    launch = launch_file_backend(
        run_launcher, write_config, secrets_dir, "--keep-env", "VAULT_TOKEN",
        env={"VAULT_TOKEN": "kept-on-purpose", "AWS_SECRET_ACCESS_KEY": "dropped"},
    )
    assert launch.report["environ"]["VAULT_TOKEN"] == "kept-on-purpose"
    assert "AWS_SECRET_ACCESS_KEY" not in launch.report["environ"]


def test_everything_else_in_the_environment_passes_through_unchanged(
    run_launcher, write_config, secrets_dir, clean_env
) -> None:
    launch = launch_file_backend(run_launcher, write_config, secrets_dir, env={"ODD": "a=b\nc"})
    environ = launch.report["environ"]
    for name, value in {**clean_env, "ODD": "a=b\nc"}.items():
        assert environ[name] == value


def test_a_config_without_references_still_goes_through_the_memfd(run_launcher, write_config) -> None:
    path = write_config("[http]\nport = 9998\n")
    launch = run_launcher("-c", str(path))
    assert launch.returncode == 0, launch.stderr
    assert launch.report["config"]["link"] == "/memfd:kms.toml (deleted)"
    assert launch.report["parsed"] == {"http": {"port": 9998}}


def test_the_running_server_is_seen_from_outside_with_a_scrubbed_environment(
    tmp_path, write_config, secrets_dir, clean_env
) -> None:
    (secrets_dir / "token").write_text("outside-view-secret")
    config = write_config('token = "secret://token"\n')
    ready = tmp_path / "ready"
    waiter = (
        "import os,sys,time,pathlib;"
        f"pathlib.Path({str(ready)!r}).write_text(sys.argv[-1]);"
        "time.sleep(60)"
    )
    env = {**clean_env, "KMS_SECRETS_DIR": str(secrets_dir), "VAULT_TOKEN": "should-vanish"}
    process = subprocess.Popen(
        [sys.executable, "-m", "launcher", "--backend", "file", "-c", str(config), "--",
         sys.executable, "-c", waiter],
        env=env, cwd=tmp_path,
    )
    try:
        config_path = wait_for_file(ready, process)
        server = psutil.Process(process.pid)
        assert server.cmdline()[:2] == [sys.executable, "-c"]
        assert "VAULT_TOKEN" not in server.environ()
        fd = int(config_path.rsplit("/", 1)[1])
        assert os.readlink(f"/proc/{process.pid}/fd/{fd}") == "/memfd:kms.toml (deleted)"
        with open(f"/proc/{process.pid}/fd/{fd}", "rb") as memfd:
            assert memfd.read() == b'token = "outside-view-secret"\n'
        assert not [f for f in server.open_files() if "secret" in f.path]
    finally:
        process.kill()
        process.wait()


def test_secret_files_are_delivered_in_their_own_sealed_memfds(run_launcher, write_config, secrets_dir) -> None:
    key = b"-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n"
    p12 = bytes(range(256))
    (secrets_dir / "tls").mkdir()
    (secrets_dir / "tls" / "key.pem").write_bytes(key)
    (secrets_dir / "tls" / "p12.b64").write_bytes(base64.encodebytes(p12))
    path = write_config(
        '[tls]\ntls_key_file = "secret+file://tls/key.pem"\n'
        'tls_p12_file = "secret+file+base64://tls/p12.b64"\n'
    )
    launch = run_launcher("--backend", "file", "-c", str(path), env={"KMS_SECRETS_DIR": str(secrets_dir)})
    assert launch.returncode == 0, launch.stderr
    tls = launch.report["parsed"]["tls"]
    key_file = launch.report["files"][tls["tls_key_file"]]
    p12_file = launch.report["files"][tls["tls_p12_file"]]
    assert base64.b64decode(key_file["bytes_b64"]) == key  # exact: trailing newline kept
    assert base64.b64decode(p12_file["bytes_b64"]) == p12
    assert key_file["link"] == "/memfd:tls.tls_key_file (deleted)"
    assert key_file["seals"] & ALL_SEALS == ALL_SEALS
    assert p12_file["write_errno"] == errno.EPERM


def test_bad_base64_in_a_secret_file_is_a_data_error(run_launcher, write_config, secrets_dir) -> None:
    (secrets_dir / "p12").write_text("this is not base64!")
    path = write_config('tls_p12_file = "secret+file+base64://p12"\n')
    launch = run_launcher("--backend", "file", "-c", str(path), env={"KMS_SECRETS_DIR": str(secrets_dir)})
    assert launch.returncode == 65
    assert launch.stderr == "kms-launch: tls_p12_file: secret+file+base64://p12: the secret is not valid base64\n"
    assert launch.report is None


def test_a_binary_secret_substituted_as_text_is_a_data_error(run_launcher, write_config, secrets_dir) -> None:
    (secrets_dir / "bin").write_bytes(b"\xff\xfe\x00binary")
    path = write_config('password = "secret://bin"\n')
    launch = run_launcher("--backend", "file", "-c", str(path), env={"KMS_SECRETS_DIR": str(secrets_dir)})
    assert launch.returncode == 65
    assert "password: secret://bin: the secret is not UTF-8 text" in launch.stderr
    assert launch.report is None
