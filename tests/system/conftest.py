"""Session fixtures of the system tests: the cached rootfs and wheels, skipped with one line of
reason where root or the tools are missing, so the README's test command passes on a laptop."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.system import harness

PRIVILEGED = {"test_systemd_unit.py", "test_systemd_backoff.py", "test_podman_image.py", "test_rotation.py"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(item.path).name in PRIVILEGED and Path(item.path).parent == Path(__file__).parent:
            item.add_marker(pytest.mark.system)


@pytest.fixture(scope="session")
def debian_rootfs() -> Path:
    reason = harness.missing_privileges(harness.ROOTFS_TOOLS)
    if reason:
        pytest.skip(reason)
    started = time.monotonic()
    path = harness.rootfs()
    print(f"\nrootfs {path.name}: ready in {time.monotonic() - started:.1f}s")
    return path


@pytest.fixture(scope="session")
def wheels(debian_rootfs: Path) -> tuple[Path, Path]:
    """(dependency wheelhouse from the cache, directory holding this checkout's wheel)."""
    started = time.monotonic()
    house = harness.wheelhouse()
    checkout = harness.checkout_wheel(house)
    print(f"\nwheels ready in {time.monotonic() - started:.1f}s")
    return house, checkout


class Blackhole:
    """A loopback port that accepts connections and never answers: a vault that hangs."""

    def __init__(self) -> None:
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(64)
        self.port = self.socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.accepted: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                self.accepted.append(self.socket.accept()[0])
            except OSError:
                return

    def wait_for_a_client(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not self.accepted:
            assert time.monotonic() < deadline, "nobody connected to the blackhole"
            time.sleep(0.02)

    def close(self) -> None:
        self.socket.close()
        for connection in self.accepted:
            connection.close()


@pytest.fixture
def blackhole() -> Iterator[Blackhole]:
    hole = Blackhole()
    yield hole
    hole.close()


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A loopback port bound but not listening (nobody else can take it): connections are refused."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        yield held.getsockname()[1]
