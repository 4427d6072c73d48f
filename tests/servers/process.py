"""What the real test servers (OpenBao, moto) share: wait until one answers, stop it cleanly."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from types import TracebackType
from typing import Self


def wait_until_ready(
    process: subprocess.Popen[bytes] | None, ready: Callable[[], bool], seconds: float
) -> bool:
    """Poll `ready` until it holds; False if the process died or `seconds` passed first."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process is None or process.poll() is not None:
            return False
        try:
            if ready():
                return True
        except OSError:  # requests' errors are OSErrors too: not listening yet
            pass
        time.sleep(0.05)
    return False


def stop(process: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM, then SIGKILL if it has not exited within 10 s."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class ServerProcess:
    """A server run as a child process for the length of a `with` block."""

    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        stop(self.process)
        self.process = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
