"""An HTTP fault proxy for tests: forwards to a plaintext upstream, counts requests, injects faults."""

from __future__ import annotations

import contextlib
import http.client
import socket
import struct
import threading
import time
from dataclasses import dataclass, field


@dataclass
class Faults:
    """What the proxy does to the traffic; counters run down as faults are spent."""

    latency: float = 0.0  # seconds added before each request is forwarded
    reset_connections: int = 0  # the next N connections are reset (RST) on accept
    blackhole_connections: int = 0  # the next N connections are accepted and never answered
    status_requests: int = 0  # the next N requests are answered with `status` by the proxy
    status: int = 503
    retry_after: float | None = None  # sent with `status` (429 Retry-After)
    blackhole_all: bool = False  # every connection is held without an answer


@dataclass
class Seen:
    method: str
    path: str
    answered_by_proxy: bool = False


@dataclass
class FaultProxy:
    """Listen on 127.0.0.1, forward HTTP/1.1 to upstream; `requests` records every request seen."""

    upstream_host: str
    upstream_port: int
    faults: Faults = field(default_factory=Faults)
    requests: list[Seen] = field(default_factory=list)
    connections: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def forwarded(self, path_part: str = "") -> int:
        """Requests that reached the upstream (optionally only those whose path contains path_part)."""
        return sum(1 for r in self.requests if not r.answered_by_proxy and path_part in r.path)

    def reset(self, faults: Faults | None = None) -> None:
        """New faults, cleared counters; connections held by a blackhole are released."""
        with self._lock:
            self.faults = faults or Faults()
            self.requests.clear()
            self.connections = 0
            held, self._held = self._held, []
        for sock in held:
            _abort(sock)

    def refuse_for(self, seconds: float) -> None:
        """Stop listening (connections are refused by the kernel), then listen again."""
        self._listener.close()
        time.sleep(seconds)
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stopping.set()
        self.reset()
        self._listener.close()

    def _accept_loop(self) -> None:
        listener = self._listener
        while not self._stopping.is_set():
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed by refuse_for() or close()
            with self._lock:
                self.connections += 1
                faults = self.faults
                if faults.reset_connections > 0:
                    faults.reset_connections -= 1
                    _abort(client)
                    continue
                if faults.blackhole_all or faults.blackhole_connections > 0:
                    faults.blackhole_connections = max(0, faults.blackhole_connections - 1)
                    self._held.append(client)
                    continue
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=30)
        reader = client.makefile("rb")
        try:
            while True:
                request = _read_request(reader)
                if request is None:
                    return
                method, path, headers, body = request
                with self._lock:
                    faults = self.faults
                    inject = faults.status_requests > 0
                    if inject:
                        faults.status_requests -= 1
                    self.requests.append(Seen(method, path, answered_by_proxy=inject))
                    latency = faults.latency
                if latency:
                    time.sleep(latency)
                if inject:
                    client.sendall(_injected(faults.status, faults.retry_after))
                    continue
                upstream.request(method, path, body=body, headers=headers)
                response = upstream.getresponse()
                payload = response.read()
                head = [f"HTTP/1.1 {response.status} {response.reason}"]
                for name, value in response.getheaders():
                    if name.lower() not in ("transfer-encoding", "content-length", "connection"):
                        head.append(f"{name}: {value}")
                head.append(f"Content-Length: {len(payload)}")
                client.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + payload)
        except OSError:
            return
        finally:
            upstream.close()
            with contextlib.suppress(OSError):
                client.close()


def _read_request(reader) -> tuple[str, str, dict[str, str], bytes] | None:  # type: ignore[no-untyped-def]
    line = reader.readline()
    if not line:
        return None
    method, path, _ = line.decode("latin-1").split(" ", 2)
    headers: dict[str, str] = {}
    while True:
        header = reader.readline().decode("latin-1")
        if header in ("\r\n", "\n", ""):
            break
        name, value = header.split(":", 1)
        headers[name.strip()] = value.strip()
    length = int(next((v for k, v in headers.items() if k.lower() == "content-length"), "0"))
    body = reader.read(length) if length else b""
    headers = {k: v for k, v in headers.items() if k.lower() not in ("connection", "keep-alive")}
    return method, path, headers, body


def _injected(status: int, retry_after: float | None) -> bytes:
    body = b'{"errors":["injected by the fault proxy"]}'
    head = [f"HTTP/1.1 {status} Injected", "Content-Type: application/json"]
    if retry_after is not None:
        head.append(f"Retry-After: {retry_after:g}")
    head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def _abort(sock: socket.socket) -> None:
    """Close with RST rather than FIN, as a crashed peer or a middlebox would."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
