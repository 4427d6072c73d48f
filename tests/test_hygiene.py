"""Secret hygiene: plaintext goes only into the memfd, no file is created, the launcher is
non-dumpable while it holds secrets, and the sealed memfd cannot be changed from outside."""

from __future__ import annotations

import errno
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import wait_for_file

SECRET = "hygiene-secret-4b1d9e"


def test_secret_bytes_are_written_only_to_the_memfd_and_no_file_is_created(
    tmp_path: Path, write_config, secrets_dir: Path, clean_env: dict[str, str]
) -> None:
    (secrets_dir / "db").write_text(SECRET + "\n")
    config = write_config('[db]\ndatabase_url = "postgresql://kms:secret://db@db:5432/kms"\n')
    trace = tmp_path / "trace"
    env = {**clean_env, "KMS_SECRETS_DIR": str(secrets_dir), "PYTHONDONTWRITEBYTECODE": "1",
           "VAULT_TOKEN": "hygiene-vault-token"}
    result = subprocess.run(
        ["strace", "-f", "-qq", "-s", "1000000", "-o", str(trace),
         "-e", "trace=memfd_create,write,pwrite64,writev,sendto,sendmsg,openat,creat,mknodat,"
         "rename,renameat,renameat2,link,linkat,symlinkat,mkdirat,execve",
         sys.executable, "-m", "launcher", "--backend", "file", "-c", str(config), "--", "/bin/true"],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    lines = trace.read_text().splitlines()

    memfds = {m.group(1) for line in lines if (m := re.search(r'memfd_create\("kms.toml", .*\) = (\d+)', line))}
    assert len(memfds) == 1
    memfd = memfds.pop()
    holding_secret = [line for line in lines if SECRET in line and "read(" not in line]
    assert holding_secret, "the trace should show the secret written once"
    for line in holding_secret:
        assert re.search(rf"\bwrite\({memfd}, ", line), f"secret outside the memfd: {line[:200]}"

    created = [line for line in lines if re.search(r"openat\(.*O_CREAT", line) or re.search(r"\b(creat|mknodat|renameat2?|rename|linkat|link|symlinkat|mkdirat)\(", line)]
    assert created == []


def test_the_servers_environment_holds_no_credential_variable_under_exec(
    tmp_path: Path, write_config, secrets_dir: Path, clean_env: dict[str, str]
) -> None:
    (secrets_dir / "x").write_text("v")
    config = write_config('a = "secret://x"\n')
    trace = tmp_path / "trace"
    env = {**clean_env, "KMS_SECRETS_DIR": str(secrets_dir), "VAULT_TOKEN": "tok", "AWS_SECRET_ACCESS_KEY": "aws",
           "AZURE_CLIENT_SECRET": "az", "COSMIAN_KMS_SECRET_TOKEN": "cos", "KMS_SECRET_BACKEND": "file"}
    subprocess.run(
        ["strace", "-f", "-qq", "-v", "-s", "100000", "-o", str(trace), "-e", "trace=execve",
         sys.executable, "-m", "launcher", "-c", str(config), "--", "/bin/true"],
        env=env, check=True, timeout=60,
    )
    [server_exec] = [line for line in trace.read_text().splitlines() if 'execve("/usr/bin/true"' in line or 'execve("/bin/true"' in line]
    for name in ("VAULT_TOKEN", "AWS_SECRET_ACCESS_KEY", "AZURE_CLIENT_SECRET", "COSMIAN_KMS_SECRET_TOKEN", "KMS_SECRET_BACKEND"):
        assert f'"{name}=' not in server_exec
    assert f'"KMS_SECRETS_DIR={secrets_dir}"' in server_exec


def test_the_launcher_is_non_dumpable_once_it_runs(write_config, clean_env: dict[str, str]) -> None:
    config = write_config("a = 1\n")
    probe = (
        "import ctypes; from launcher.cli import cli;"
        "libc = ctypes.CDLL(None);"
        "before = libc.prctl(3, 0, 0, 0, 0);"  # PR_GET_DUMPABLE
        f"code = cli(['-c', {str(config)!r}, '--check']);"
        "print(before, code, libc.prctl(3, 0, 0, 0, 0))"
    )
    result = subprocess.run([sys.executable, "-c", probe], env=clean_env, capture_output=True, text=True, timeout=30)
    assert result.stdout.split() == ["1", "0", "0"], result.stderr


def test_the_server_is_dumpable_again_after_exec(run_launcher, write_config) -> None:
    probe = "import ctypes,sys; sys.exit(10 + ctypes.CDLL(None).prctl(3, 0, 0, 0, 0))"
    launch = run_launcher("-c", str(write_config("a = 1\n")), command=[sys.executable, "-c", probe, "{config}"])
    assert launch.returncode == 11


def test_the_memfd_cannot_be_written_or_resized_from_outside(
    tmp_path: Path, write_config, secrets_dir: Path, clean_env: dict[str, str]
) -> None:
    (secrets_dir / "x").write_text(SECRET)
    config = write_config('a = "secret://x"\n')
    ready = tmp_path / "ready"
    waiter = f"import sys,time,pathlib; pathlib.Path({str(ready)!r}).write_text(sys.argv[-1]); time.sleep(60)"
    process = subprocess.Popen(
        [sys.executable, "-m", "launcher", "--backend", "file", "-c", str(config), "--", sys.executable, "-c", waiter],
        env={**clean_env, "KMS_SECRETS_DIR": str(secrets_dir)},
    )
    try:
        fd = wait_for_file(ready, process).rsplit("/", 1)[1]
        path = f"/proc/{process.pid}/fd/{fd}"
        with pytest.raises(PermissionError) as caught, open(path, "r+b") as memfd:
            memfd.write(b"tampered")
        assert caught.value.errno == errno.EPERM
        with pytest.raises(PermissionError), open(path, "r+b") as memfd:
            memfd.truncate(0)
        with open(path, "rb") as memfd:
            assert memfd.read() == f'a = "{SECRET}"\n'.encode()
    finally:
        process.kill()
        process.wait()
