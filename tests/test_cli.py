"""The command line: exit codes, one-line errors that name key and reference, check mode, options."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import psutil
import pytest

from tests.broken_backend import LEAKED
from tests.conftest import STANDIN, silent_listener, without_launch_record


def test_a_missing_config_exits_66_and_execs_nothing(run_launcher, tmp_path) -> None:
    launch = run_launcher("-c", str(tmp_path / "absent.toml"))
    assert (launch.returncode, launch.report) == (66, None)
    assert launch.stderr == f"kms-launch: {tmp_path / 'absent.toml'}: no such file\n"


def test_an_unreadable_config_exits_66(write_config, clean_env) -> None:
    path = write_config("a = 1\n")
    path.chmod(0)
    # Root reads anything: drop the capabilities that let it, as setpriv does for services.
    drop = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"] if os.geteuid() == 0 else []
    result = subprocess.run(
        [*drop, sys.executable, "-m", "launcher", "-c", str(path), "--check"],
        env=clean_env, capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 66, result.stderr
    assert result.stderr == f"kms-launch: {path}: cannot open: Permission denied\n"


@pytest.mark.parametrize("kind", ["directory", "fifo"])
def test_a_config_that_is_not_a_regular_file_exits_66(run_launcher, tmp_path, kind) -> None:
    path = tmp_path / "kms.toml"
    path.mkdir() if kind == "directory" else os.mkfifo(path)
    launch = run_launcher("-c", str(path), timeout=10)
    assert (launch.returncode, launch.report) == (66, None)
    assert launch.stderr.count("\n") == 1


def test_invalid_toml_exits_65_with_line_and_column(run_launcher, write_config) -> None:
    path = write_config('[db]\ndatabase_url = "unterminated\n')
    launch = run_launcher("-c", str(path))
    assert (launch.returncode, launch.report) == (65, None)
    assert "invalid TOML at line 2, column" in launch.stderr
    assert launch.stderr.count("\n") == 1


def test_every_malformed_reference_is_reported_once_and_nothing_runs(run_launcher, write_config) -> None:
    path = write_config('a = "secret://"\n[tls]\nkey = "secret://[oops]/x"\n')
    launch = run_launcher("--backend", "file", "-c", str(path))
    assert (launch.returncode, launch.report) == (65, None)
    assert launch.stderr.splitlines() == [
        "kms-launch: a: secret://: empty or malformed reference",
        "kms-launch: tls.key: secret://[oops]/x: bad IPv6 address [oops]",
    ]


def test_references_without_a_backend_exit_78(run_launcher, write_config) -> None:
    launch = run_launcher("-c", str(write_config('a = "secret://x"\n')))
    assert (launch.returncode, launch.report) == (78, None)
    assert "no backend is chosen: pass --backend or set KMS_SECRET_BACKEND" in launch.stderr


def test_an_unknown_backend_exits_2(run_launcher, write_config) -> None:
    launch = run_launcher("--backend", "nosuch", "-c", str(write_config("a = 1\n")))
    assert (launch.returncode, launch.report) == (2, None)
    assert "unknown backend 'nosuch'" in launch.stderr


def test_an_unknown_option_exits_2(run_launcher, write_config) -> None:
    launch = run_launcher("--no-such-option", "-c", str(write_config("a = 1\n")))
    assert (launch.returncode, launch.report) == (2, None)
    assert "Traceback" not in launch.stderr


def test_the_backend_comes_from_the_environment(run_launcher, write_config, secrets_dir) -> None:
    (secrets_dir / "x").write_text("from-env-backend")
    launch = run_launcher(
        "-c", str(write_config('a = "secret://x"\n')),
        env={"KMS_SECRET_BACKEND": "file", "KMS_SECRETS_DIR": str(secrets_dir)},
    )
    assert launch.returncode == 0, launch.stderr
    assert launch.report["parsed"] == {"a": "from-env-backend"}


def test_a_command_that_is_not_found_exits_127_before_any_backend_is_asked(
    run_launcher, write_config
) -> None:
    # The env backend would fail with 65 on the missing variable: 127 proves it was never asked.
    launch = run_launcher(
        "--backend", "env", "-c", str(write_config('a = "secret://MISSING"\n')),
        command=["no-such-kms-binary"],
    )
    assert launch.returncode == 127
    assert launch.stderr == "kms-launch: command 'no-such-kms-binary' not found on PATH\n"


def test_a_command_that_is_not_executable_exits_126(run_launcher, write_config, tmp_path) -> None:
    script = tmp_path / "kms-server"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o644)
    launch = run_launcher("-c", str(write_config("a = 1\n")), command=[str(script)])
    assert launch.returncode == 126
    assert "not executable" in launch.stderr


def test_the_default_command_is_cosmian_kms_on_path(write_config, tmp_path, clean_env) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "cosmian_kms"
    fake.write_text(f'#!/bin/sh\necho "$0 $*" > {tmp_path}/ran\n')
    fake.chmod(0o755)
    env = {**clean_env, "PATH": f"{bin_dir}:{clean_env['PATH']}"}
    config = write_config("a = 1\n")
    result = subprocess.run(
        [sys.executable, "-m", "launcher", "-c", str(config)],
        env=env, capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "ran").read_text() == f"{fake} -c /proc/self/fd/3\n"


def test_check_mode_prints_one_line_per_reference_without_values(run_launcher, write_config, secrets_dir) -> None:
    (secrets_dir / "db").write_text("db-secret-value\n")
    (secrets_dir / "tok").write_text("token-secret-value")
    path = write_config('[db]\nurl = "pg://u:secret://db@h"\n[http]\ntoken = "secret://tok"\nagain = "secret://db"\n')
    launch = run_launcher("--backend", "file", "-c", str(path), "--check", env={"KMS_SECRETS_DIR": str(secrets_dir)})
    assert (launch.returncode, launch.report) == (0, None)
    # The file backend's version (device:inode:size:mtime_ns) ends each ok line: see test_pins.py.
    assert [line.split("\tversion ")[0] for line in launch.stdout.splitlines()] == [
        "db.url\tsecret://db\tok\t15 bytes",
        "http.token\tsecret://tok\tok\t18 bytes",
        "http.again\tsecret://db\tok\t15 bytes",
    ]
    assert "secret-value" not in launch.output


def test_check_mode_reports_each_failure_and_exits_with_its_code(run_launcher, write_config, secrets_dir) -> None:
    (secrets_dir / "present").write_text("present-value")
    path = write_config('a = "secret://present"\nb = "secret://absent"\n')
    launch = run_launcher("--backend", "file", "-c", str(path), "--check", env={"KMS_SECRETS_DIR": str(secrets_dir)})
    assert launch.returncode == 65
    lines = launch.stdout.splitlines()
    assert lines[0].startswith("a\tsecret://present\tok\t13 bytes\tversion ")
    assert lines[1].startswith("b\tsecret://absent\terror\tno file ")
    assert launch.stderr.splitlines() == [f"kms-launch: b: secret://absent: no file {secrets_dir.resolve()}/absent"]


def test_a_reference_used_twice_that_fails_is_reported_at_both_keys(run_launcher, write_config, secrets_dir) -> None:
    path = write_config('a = "secret://absent"\n[t]\nb = "x-secret://absent"\n')
    launch = run_launcher("--backend", "file", "-c", str(path), env={"KMS_SECRETS_DIR": str(secrets_dir)})
    assert launch.returncode == 65
    assert [line.split(": ")[1] for line in launch.stderr.splitlines()] == ["a", "t.b"]


def test_verbose_logs_each_step_to_stderr_without_values(run_launcher, write_config, secrets_dir) -> None:
    (secrets_dir / "x").write_text("verbose-secret-value")
    launch = run_launcher("-v", "--backend", "file", "-c", str(write_config('a = "secret://x"\n')),
                          env={"KMS_SECRETS_DIR": str(secrets_dir)})
    assert launch.returncode == 0
    assert "1 references (1 distinct)" in launch.stderr
    assert "resolved 1 references from file" in launch.stderr
    assert "  a: secret://x (20 bytes)" in launch.stderr
    assert "exec " in launch.stderr
    assert "verbose-secret-value" not in launch.output


def test_quiet_still_prints_every_failure(run_launcher, write_config, secrets_dir) -> None:
    path = write_config('a = "secret://absent"\n[t]\nb = "secret://gone"\n')
    launch = run_launcher("-q", "--backend", "file", "-c", str(path), env={"KMS_SECRETS_DIR": str(secrets_dir)})
    assert (launch.returncode, launch.report, launch.stdout) == (65, None, "")
    lines = launch.stderr.splitlines()
    assert [line.split(": ")[1:3] for line in lines] == [["a", "secret://absent"], ["t.b", "secret://gone"]]
    assert all("no file" in line for line in lines)


def test_quiet_prints_nothing_on_success_and_the_default_only_the_launch_record(
    run_launcher, write_config, secrets_dir
) -> None:
    (secrets_dir / "x").write_text("v")
    config = str(write_config('a = "secret://x"\n'))
    quiet = run_launcher("-q", "--backend", "file", "-c", config, env={"KMS_SECRETS_DIR": str(secrets_dir)})
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "", "")
    default = run_launcher("--backend", "file", "-c", config, env={"KMS_SECRETS_DIR": str(secrets_dir)})
    assert (default.returncode, default.stdout) == (0, "")
    assert default.stderr.startswith("kms-launch: launch record: ")
    assert without_launch_record(default.stderr) == ""


def test_verbose_and_quiet_together_are_a_usage_error(run_launcher, write_config) -> None:
    assert run_launcher("-v", "-q", "-c", str(write_config("a = 1\n"))).returncode == 2


def test_version_prints_the_version(run_launcher) -> None:
    launch = run_launcher("--version")
    assert launch.returncode == 0
    assert launch.stdout.startswith("kms-launch ")


def test_a_backend_chosen_with_no_references_imports_no_sdk(write_config, clean_env) -> None:
    path = write_config("[http]\nport = 9998\n")
    probe = (
        "import sys; from launcher.cli import cli;"
        f"code = cli(['--backend', 'vault', '-c', {str(path)!r}, '--check']);"
        "heavy = [m for m in ('hvac', 'boto3', 'botocore', 'msal', 'requests') if m in sys.modules];"
        "print(code, heavy)"
    )
    result = subprocess.run([sys.executable, "-c", probe], env=clean_env, capture_output=True, text=True, timeout=30)
    assert result.stdout.strip() == "0 []", result.stderr


def test_the_file_backend_imports_no_sdk(write_config, secrets_dir, clean_env) -> None:
    (secrets_dir / "x").write_text("v")
    path = write_config('a = "secret://x"\n')
    probe = (
        "import sys; from launcher.cli import cli;"
        f"code = cli(['--backend', 'file', '-c', {str(path)!r}, '--check']);"
        "heavy = [m for m in ('hvac', 'boto3', 'botocore', 'msal', 'requests', 'rich') if m in sys.modules];"
        "print(code, heavy)"
    )
    env = {**clean_env, "KMS_SECRETS_DIR": str(secrets_dir)}
    result = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=30)
    assert result.stdout.strip().splitlines()[-1] == "0 []", result.stderr


def test_the_timeout_comes_from_the_environment(run_launcher, write_config, ends_by_deadline) -> None:
    # A vault that never answers: the run ends by KMS_LAUNCH_TIMEOUT's 1 s, not the default 30 s.
    with silent_listener() as url:
        launch = run_launcher(
            "--backend", "vault", "-c", str(write_config('a = "secret://secret/kms"\n')),
            env={"KMS_LAUNCH_TIMEOUT": "1", "VAULT_ADDR": url, "VAULT_TOKEN": "t"},
        )
    assert launch.returncode == 69, launch.stderr
    ends_by_deadline(launch, "vault", 1)


def test_a_timeout_from_the_environment_is_checked_like_the_option(run_launcher, write_config) -> None:
    launch = run_launcher("-c", str(write_config("a = 1\n")), env={"KMS_LAUNCH_TIMEOUT": "0"})
    assert launch.returncode == 2
    assert "0.1" in launch.stderr


def test_no_traceback_is_ever_printed_for_a_failure(run_launcher, write_config, tmp_path) -> None:
    for args in (["-c", str(tmp_path)], ["-c", str(write_config("= broken"))], ["--backend", "vault", "-c", str(write_config('a = "secret://k/v"'))]):
        launch = run_launcher(*args)
        assert launch.returncode != 0
        assert "Traceback" not in launch.output


# -- signals, bugs, missing extras, what each backend imports -----------------------------------


@pytest.mark.parametrize(
    ("signum", "status"), [(signal.SIGINT, 130), (signal.SIGHUP, 129), (signal.SIGTERM, 143)],
    ids=["SIGINT", "SIGHUP", "SIGTERM"],
)
def test_a_signal_while_resolving_ends_the_launcher_with_128_plus_its_number(
    write_config, clean_env, tmp_path, signum: int, status: int
) -> None:
    """Seen from the shell that started it (it dies by the signal itself, so systemd sees a
    clean stop; as PID 1 of a container it exits with the number: tests/test_pid1.py)."""
    config = write_config('a = "secret://secret/kms"\n')
    with silent_listener() as url:
        env = {**clean_env, "VAULT_ADDR": url, "VAULT_TOKEN": "t", "STANDIN_REPORT": str(tmp_path / "report")}
        shell = subprocess.Popen(
            ["sh", "-c", '"$@"; echo "status $?"', "sh",
             sys.executable, "-m", "launcher", "--backend", "vault", "--timeout", "60", "-c", str(config),
             "--", sys.executable, str(STANDIN)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        try:
            # Until it waits on the vault: its handlers are in place, a secret may be in flight.
            while not (children := psutil.Process(shell.pid).children()) or not children[0].net_connections("tcp"):
                assert shell.poll() is None, shell.communicate()
                time.sleep(0.01)
            children[0].send_signal(signum)
            stdout, stderr = shell.communicate(timeout=30)  # long before the 60 s deadline
        finally:
            if shell.poll() is None:
                for child in psutil.Process(shell.pid).children():
                    child.kill()
                shell.kill()
                shell.communicate()
    assert stdout == f"status {status}\n", stderr
    assert not (tmp_path / "report").exists()


def test_an_unexpected_exception_exits_70_naming_only_its_type(write_config, clean_env) -> None:
    path = write_config('a = "secret://x"\n')
    root = str(Path(__file__).parents[1])
    probe = (
        f"import sys; sys.path.insert(0, {root!r});"
        "from launcher import backends; from launcher.cli import cli;"
        "backends.REGISTRY['broken'] = backends.Spec('tests.broken_backend:BrokenBackend', None);"
        f"sys.exit(cli(['--backend', 'broken', '-c', {str(path)!r}, '--', '/bin/true']))"
    )
    result = subprocess.run([sys.executable, "-c", probe], env=clean_env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 70
    assert result.stderr == "kms-launch: internal error (KeyError); please report it\n"
    assert LEAKED not in result.stdout + result.stderr


def test_a_missing_sdk_exits_78_with_the_extra_to_install(write_config, clean_env, tmp_path) -> None:
    # An environment like a plain `pip install kms-launch`: every installed package but boto3's.
    site = Path(sysconfig.get_paths()["purelib"])
    without = tmp_path / "site-packages-without-boto3"
    without.mkdir()
    for entry in site.iterdir():
        if not entry.name.lower().startswith(("boto3", "botocore", "__editable__", "kms_launch")):
            (without / entry.name).symlink_to(entry)
    path = write_config('a = "secret://eu-west-1/kms/db"\n')
    env = {**clean_env, "PYTHONPATH": f"{without}:{Path(__file__).parents[1]}"}
    # -S: no site-packages of the venv, only the paths above.
    result = subprocess.run(
        [sys.executable, "-S", "-m", "launcher", "--backend", "aws-ssm", "-c", str(path), "--", "/bin/true"],
        env=env, capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 78, result.stderr
    assert "pip install 'kms-launch[aws-ssm]'" in result.stderr
    assert "boto" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_vault_backend_imports_neither_boto3_nor_msal(openbao, write_config, clean_env) -> None:
    openbao.put("cli/imports", value="v")
    path = write_config('a = "secret://secret/cli/imports"\n')
    probe = (
        "import sys; from launcher.cli import cli;"
        f"code = cli(['--backend', 'vault', '-c', {str(path)!r}, '--check']);"
        "print(code, [m for m in ('boto3', 'botocore', 'msal') if m in sys.modules])"
    )
    env = {**clean_env, "VAULT_ADDR": openbao.url, "VAULT_TOKEN": openbao.token}
    result = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=30)
    assert result.stdout.strip().splitlines()[-1] == "0 []", result.stderr
