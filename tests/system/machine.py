"""A Debian 12 machine with real systemd as PID 1: systemd-nspawn boots an overlay of the cached
rootfs (the cache stays pristine), and commands go in with nsenter, as there is no host bus."""

from __future__ import annotations

import contextlib
import itertools
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psutil

_numbers = itertools.count()

# What a command inside gets instead of the host's environment (CA bundles, proxies, VAULT_*).
INSIDE_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
              "LANG": "C.UTF-8", "SYSTEMD_PAGER": "", "SYSTEMD_COLORS": "0"}


class Machine:
    """One booted container. `root` is its file system as seen from the host."""

    def __init__(self, rootfs: Path, workdir: Path, binds: dict[Path, str]) -> None:
        self.lower = rootfs
        self.workdir = workdir
        self.root = workdir / "root"
        self.binds = binds
        self.name = f"kms-launch-test-{os.getpid()}-{next(_numbers)}"
        self.nspawn: subprocess.Popen[bytes] | None = None
        self.init_pid = 0

    def boot(self, timeout: float = 60) -> None:
        for name in ("upper", "work", "root"):
            (self.workdir / name).mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["mount", "-t", "overlay", "overlay", "-o",
             f"lowerdir={self.lower},upperdir={self.workdir / 'upper'},workdir={self.workdir / 'work'}",
             str(self.root)],
            check=True,
        )
        log = (self.workdir / "nspawn.log").open("wb")
        # --keep-unit and --register=no: no host systemd bus to register a scope with.
        self.nspawn = subprocess.Popen(
            ["systemd-nspawn", "-b", "-D", str(self.root), "--register=no", "--keep-unit",
             "--console=passive", "-M", self.name,
             *[f"--bind-ro={host}:{inside}" for host, inside in self.binds.items()]],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while not self.init_pid:
            if self.nspawn.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"systemd-nspawn did not boot: {self.log()}")
            self.init_pid = next(
                (child.pid for child in psutil.Process(self.nspawn.pid).children()
                 if child.name() == "systemd"), 0)
            time.sleep(0.05)
        while True:  # systemctl fails until systemd has opened its private socket
            state = self.sh("systemctl is-system-running --wait", check=False, timeout=timeout)
            if state.stdout.strip() in ("running", "degraded"):
                return
            if "Failed to connect to" not in state.stderr or time.monotonic() > deadline:
                raise RuntimeError(f"the machine did not come up: {state.stdout} {state.stderr}")
            time.sleep(0.05)

    def log(self) -> str:
        return (self.workdir / "nspawn.log").read_text(errors="replace")[-4000:]

    def sh(self, script: str, *, input: str | None = None, check: bool = True,
           timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run a shell script inside, in every namespace of its systemd, as root."""
        result = subprocess.run(
            ["nsenter", "-t", str(self.init_pid), "-a", "/usr/bin/env", "-i",
             *[f"{k}={v}" for k, v in INSIDE_ENV.items()], "/bin/sh", "-c", script],
            input=input, capture_output=True, text=True, timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"inside the machine: {script!r} exited {result.returncode}:\n"
                f"{result.stdout}{result.stderr}")
        return result

    def show(self, unit: str, *properties: str) -> dict[str, str]:
        out = self.sh(f"systemctl show {shlex.quote(unit)} "
                      + " ".join(f"-p {p}" for p in properties)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def path(self, inside: str) -> Path:
        """A path inside, as seen from the host (through the overlay)."""
        return self.root / inside.lstrip("/")

    def shutdown(self) -> None:
        if self.nspawn is not None and self.nspawn.poll() is None:
            # SIGTERM asks nspawn to shut the container's systemd down cleanly.
            self.nspawn.send_signal(signal.SIGTERM)
            try:
                self.nspawn.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.nspawn.pid, signal.SIGKILL)
                self.nspawn.wait(timeout=30)
        with contextlib.suppress(subprocess.CalledProcessError):
            subprocess.run(["umount", str(self.root)], check=True, capture_output=True)


@contextlib.contextmanager
def booted(rootfs: Path, workdir: Path, binds: dict[Path, str]) -> Iterator[Machine]:
    machine = Machine(rootfs, workdir, binds)
    try:
        machine.boot()
        yield machine
    finally:
        machine.shutdown()
