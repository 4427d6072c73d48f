"""kms-launch as a container's PID 1: it execs the server in place, so the server is PID 1, gets the
runtime's SIGTERM itself, and the container exits with the server's own status.

`unshare --pid --fork --mount-proc` plays the container runtime: its child is PID 1 of a new PID
namespace. The stand-in server is tests/sigterm_server.py.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.conftest import silent_listener, wait_for_file

SERVER = Path(__file__).parent / "sigterm_server.py"
KMS_LAUNCH = Path(sys.executable).with_name("kms-launch")  # the console script, as in the image
SEALS = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE
DB_PASSWORD = "pid1-db-password"


def _pid_namespace_refused() -> str | None:
    if shutil.which("unshare") is None:
        return "unshare (util-linux) is not installed"
    probe = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", "true"], capture_output=True, text=True
    )
    if probe.returncode != 0:
        return f"the kernel refuses a new PID namespace here: {probe.stderr.strip()}"
    return None


@dataclass
class Pid1Run:
    """kms-launch started as PID 1 of a new PID namespace, its server up and waiting for SIGTERM."""

    unshare: subprocess.Popen[str]
    server_pid: int  # PID 1 of the namespace, as seen from outside it
    report: dict[str, Any]
    report_path: Path

    def sigterm_report(self) -> dict[str, Any] | None:
        path = Path(f"{self.report_path}.sigterm")
        return json.loads(path.read_text()) if path.exists() else None


@pytest.fixture
def start_as_pid1(tmp_path: Path, clean_env: dict[str, str]) -> Iterator[Callable[..., Pid1Run]]:
    refused = _pid_namespace_refused()
    if refused:
        pytest.skip(refused)
    assert KMS_LAUNCH.exists(), f"console script {KMS_LAUNCH} is not installed"
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "db-password").write_text(DB_PASSWORD + "\n")
    config = tmp_path / "kms.toml"
    config.write_text(
        '[db]\ndatabase_url = "postgresql://kms:secret://db-password@db.internal:5432/kms"\n'
    )
    started: list[subprocess.Popen[str]] = []

    def start(exit_on_sigterm: int = 42) -> Pid1Run:
        report_path = tmp_path / f"report-{len(started)}.json"
        env = {
            **clean_env,
            "KMS_SECRET_BACKEND": "file",
            "KMS_SECRETS_DIR": str(secrets),
            "SIGTERM_SERVER_REPORT": str(report_path),
            "SIGTERM_SERVER_EXIT": str(exit_on_sigterm),
        }
        argv = [
            "unshare", "--pid", "--fork", "--mount-proc",
            str(KMS_LAUNCH), "-c", str(config), "--", sys.executable, str(SERVER),
        ]  # fmt: skip
        unshare = subprocess.Popen(
            argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        started.append(unshare)
        report = wait_for_file(report_path, unshare)
        children = psutil.Process(unshare.pid).children()
        assert len(children) == 1, f"unshare should have one child, PID 1: {children}"
        return Pid1Run(unshare, children[0].pid, json.loads(report), report_path)

    yield start
    for unshare in started:
        if unshare.poll() is None:
            for child in psutil.Process(unshare.pid).children(recursive=True):
                child.kill()
            unshare.kill()
        unshare.communicate()


def _namespace_pids(pid: int) -> list[int]:
    """The process's PID in each PID namespace it belongs to, outermost first (NSpid)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("NSpid:"):
            return [int(field) for field in line.split()[1:]]
    raise AssertionError(f"/proc/{pid}/status has no NSpid line")


def test_server_replaces_kms_launch_as_pid_1(start_as_pid1: Callable[..., Pid1Run]) -> None:
    run = start_as_pid1()

    assert run.report["pid"] == 1
    assert _namespace_pids(run.server_pid) == [run.server_pid, 1]
    server = psutil.Process(run.server_pid)
    assert server.cmdline()[:2] == [sys.executable, str(SERVER)]  # no kms-launch left over
    assert server.children() == []  # and nothing forked: the namespace holds the server alone


def test_sigterm_from_outside_the_namespace_reaches_the_server(
    start_as_pid1: Callable[..., Pid1Run],
) -> None:
    run = start_as_pid1()
    assert run.sigterm_report() is None

    os.kill(run.server_pid, signal.SIGTERM)
    run.unshare.wait(timeout=10)

    assert run.sigterm_report() == {"signal": signal.SIGTERM, "pid": 1}


@pytest.mark.parametrize("status", [42, 7])
def test_container_exits_with_the_servers_own_status(
    start_as_pid1: Callable[..., Pid1Run], status: int
) -> None:
    run = start_as_pid1(exit_on_sigterm=status)

    os.kill(run.server_pid, signal.SIGTERM)

    assert run.unshare.wait(timeout=10) == status


def test_server_reads_its_resolved_config_from_a_sealed_memfd(
    start_as_pid1: Callable[..., Pid1Run],
) -> None:
    run = start_as_pid1()
    config = run.report["config"]

    assert re.fullmatch(r"/proc/self/fd/\d+", config["path"])
    assert run.report["argv"][-2:] == ["-c", config["path"]]
    assert config["link"].startswith("/memfd:kms.toml")
    assert config["seals"] & SEALS == SEALS
    assert f"kms:{DB_PASSWORD}@db.internal" in config["text"]
    assert "secret://" not in config["text"]


@pytest.mark.parametrize(
    ("signum", "status"), [(signal.SIGTERM, 143), (signal.SIGINT, 130), (signal.SIGHUP, 129)],
    ids=["SIGTERM", "SIGINT", "SIGHUP"],
)
def test_a_stop_signal_while_resolving_as_pid_1_exits_128_plus_its_number_at_once(
    tmp_path: Path, clean_env: dict[str, str], signum: int, status: int
) -> None:
    """As PID 1 the kernel drops signals without a handler: kms-launch installs one, so a stop
    during resolution (here: a vault that never answers) ends it now, not at SIGKILL."""
    refused = _pid_namespace_refused()
    if refused:
        pytest.skip(refused)
    config = tmp_path / "kms.toml"
    config.write_text('password = "secret://secret/kms#password"\n')
    with silent_listener() as url:
        env = {**clean_env, "VAULT_ADDR": url, "VAULT_TOKEN": "t", "KMS_SECRET_BACKEND": "vault"}
        unshare = subprocess.Popen(
            ["unshare", "--pid", "--fork", "--mount-proc", str(KMS_LAUNCH), "--timeout", "60",
             "-c", str(config), "--", "/bin/true"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        try:
            deadline = time.monotonic() + 20
            while not psutil.Process(unshare.pid).children() and time.monotonic() < deadline:
                time.sleep(0.02)
            [launcher] = psutil.Process(unshare.pid).children()
            while launcher.net_connections(kind="tcp") == [] and time.monotonic() < deadline:
                time.sleep(0.02)  # until it is waiting on the vault, secrets' handlers in place
            assert _namespace_pids(launcher.pid)[-1] == 1
            launcher.send_signal(signum)
            unshare.communicate(timeout=30)
            # Its own status for the signal, long before the 60 s deadline: a dropped signal
            # would have let it wait out the deadline and exit 69.
            assert unshare.returncode == status
        finally:
            if unshare.poll() is None:
                unshare.kill()
                unshare.communicate()
