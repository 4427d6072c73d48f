"""Run a command in a network and mount namespace of its own, where chosen addresses and names
lead, through Unix sockets, to test servers outside it: a fixed port (Vault's default 8200, 443)
and real DNS names (sovereign clouds) without touching the machine's network or /etc/hosts.

Host side: `Namespace(tmp_path, routes, hosts)` as a context manager; `.prefix` is the argv
prefix that runs a command inside. Inside: this file runs as a script (standard library only),
brings loopback up, bind-mounts the hosts file, forwards each route, runs the command."""

from __future__ import annotations

import contextlib
import functools
import json
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

Address = tuple[str, int]


def _pump(source: socket.socket, sink: socket.socket) -> None:
    """Copy until end of stream, then pass the end on (half-close), so HTTP/1.1 works both ways."""
    with contextlib.suppress(OSError):
        while chunk := source.recv(65536):
            sink.sendall(chunk)
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)


def _splice(accepted: socket.socket, connect: Any) -> None:
    try:
        onward = connect()
    except OSError:
        accepted.close()
        return
    threads = [
        threading.Thread(target=_pump, args=(accepted, onward), daemon=True),
        threading.Thread(target=_pump, args=(onward, accepted), daemon=True),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    accepted.close()
    onward.close()


def _serve(listener: socket.socket, connect: Any) -> None:
    while True:
        try:
            accepted, _ = listener.accept()
        except OSError:  # closed: the bridge is done
            return
        threading.Thread(target=_splice, args=(accepted, connect), daemon=True).start()


def _tcp(address: Address) -> socket.socket:
    return socket.create_connection(address, timeout=None)


def _unix(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(path)
    return sock


@functools.cache
def refused() -> str | None:
    """Why no namespace can be made here, or None."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "unshare or ip (util-linux, iproute2) is not installed"
    probe = subprocess.run(
        ["unshare", "--net", "--mount", "ip", "link", "set", "lo", "up"],
        capture_output=True, text=True, check=False,
    )
    if probe.returncode != 0:
        return f"cannot create a network namespace here: {probe.stderr.strip()}"
    return None


class Namespace:
    """Routes: inside address -> outside address (a loopback TCP server of the tests).
    Hosts: name -> inside IP, written to the namespace's own /etc/hosts."""

    def __init__(
        self, directory: Path, routes: Mapping[Address, Address], hosts: Mapping[str, str] | None = None
    ) -> None:
        self.directory = directory
        self.routes = dict(routes)
        self.hosts = dict(hosts or {})
        self._listeners: list[socket.socket] = []

    def __enter__(self) -> Namespace:
        spec: dict[str, Any] = {"routes": [], "hosts": self.hosts}
        for index, (inside, outside) in enumerate(self.routes.items()):
            path = str(self.directory / f"route-{index}.sock")
            listener = socket.socket(socket.AF_UNIX)
            listener.bind(path)
            listener.listen(64)
            self._listeners.append(listener)
            threading.Thread(
                target=_serve, args=(listener, functools.partial(_tcp, outside)), daemon=True
            ).start()
            spec["routes"].append([inside[0], inside[1], path])
        (self.directory / "netns.json").write_text(json.dumps(spec))
        return self

    @property
    def prefix(self) -> list[str]:
        return [
            "unshare", "--net", "--mount",
            sys.executable, "-I", str(Path(__file__)), str(self.directory / "netns.json"), "--",
        ]  # fmt: skip

    def __exit__(self, *exc: object) -> None:
        for listener in self._listeners:
            listener.close()


def _inside(spec_path: str, argv: list[str]) -> int:
    spec = json.loads(Path(spec_path).read_text())
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    if spec["hosts"]:
        hosts = Path(spec_path).with_name("hosts")
        lines = ["127.0.0.1 localhost", "::1 localhost"]
        lines += [f"{ip} {name}" for name, ip in spec["hosts"].items()]
        hosts.write_text("\n".join(lines) + "\n")
        subprocess.run(["mount", "--bind", str(hosts), "/etc/hosts"], check=True)
    for ip, port, path in spec["routes"]:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((ip, port))
        listener.listen(64)
        threading.Thread(
            target=_serve, args=(listener, functools.partial(_unix, path)), daemon=True
        ).start()
    return subprocess.run(argv, check=False).returncode


if __name__ == "__main__":
    separator = sys.argv.index("--")
    sys.exit(_inside(sys.argv[1], sys.argv[separator + 1 :]))
