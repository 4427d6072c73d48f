"""A loopback HTTP proxy in front of a real server: records every request, and injects the faults
real networks and vaults produce (latency, resets, blackholes, refusals, 5xx, 429, canned errors)."""

from __future__ import annotations

import contextlib
import http.client
import socket
import struct
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from tests.servers.gate import InFlightGate

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


@dataclass
class Faults:
    """What the proxy does to the traffic; the counters run down as faults are spent."""

    latency: float = 0.0  # seconds added before each request is forwarded
    reset_connections: int = 0  # the next N connections are reset (RST) as soon as accepted
    blackhole_connections: int = 0  # the next N connections are accepted and never answered
    blackhole_all: bool = False  # every connection is held without an answer
    reset_requests: int = 0  # the next N requests are answered by resetting their connection
    status_requests: int = 0  # the next N requests get `status` from the proxy
    status: int = 503
    retry_after: float | None = None  # sent with `status` (429's Retry-After)
    # The backend dies after forwarding this many more requests: from then on every
    # connection and request, including those already waiting, is reset.
    die_after: int | None = None


@dataclass(frozen=True)
class Seen:
    """One request as it reached the proxy."""

    method: str
    path: str
    target: str  # X-Amz-Target (the AWS JSON API's operation), or ""
    answered_by_proxy: bool
    headers: Mapping[str, str] = field(default_factory=dict)  # as sent, names in lower case
    body: bytes = b""


@dataclass
class Canned:
    """An answer given instead of forwarding, `times` more times (-1: for ever)."""

    status: int
    body: bytes
    headers: Mapping[str, str]
    times: int
    target: str | None  # only for requests with this X-Amz-Target, if set


RESET = Canned(0, b"", {}, -1, None)  # not an answer: the connection is reset instead


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default backlog of 5 drops the SYNs of a burst of concurrent requests,
    # which clients retry a second later: that second would be measured as the backend's.
    request_queue_size = 128
    proxy: FaultProxy

    def process_request(self, request: Any, client_address: Any) -> None:
        if self.proxy._take_connection(request):
            super().process_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (its deadline passed) leaves a broken pipe: not a proxy error.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class FaultProxy:
    """Listen on 127.0.0.1, forward HTTP/1.1 to the upstream, record and break traffic on demand."""

    def __init__(self, upstream_host: str, upstream_port: int, faults: Faults | None = None) -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.faults = faults or Faults()
        self.requests: list[Seen] = []
        self.connections = 0
        self._canned: list[Canned] = []
        self._held: list[socket.socket] = []
        self._lock = threading.Lock()
        self.gate: InFlightGate | None = None  # hold requests until the client has N in flight
        self.reopened = threading.Event()
        self._closing = threading.Event()
        self.port = 0
        self._server = self._listen()

    @classmethod
    def for_url(cls, upstream: str, faults: Faults | None = None) -> FaultProxy:
        parts = urlsplit(upstream)
        return cls(parts.hostname or "127.0.0.1", parts.port or 80, faults)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def delay(self) -> float:
        return self.faults.latency

    @delay.setter
    def delay(self, seconds: float) -> None:
        self.faults.latency = seconds

    def count(self, method: str | None = None, path: str = "", target: str | None = None) -> int:
        """Requests seen with this method, a path starting with `path`, this X-Amz-Target."""
        with self._lock:
            return sum(
                1
                for seen in self.requests
                if (method is None or seen.method == method)
                and seen.path.startswith(path)
                and (target is None or seen.target == target)
            )

    def seen(self) -> list[Seen]:
        """Every request so far, in order (a copy)."""
        with self._lock:
            return list(self.requests)

    def forwarded(self, path_part: str = "") -> int:
        """Requests that reached the upstream (whose path contains `path_part`)."""
        with self._lock:
            return sum(1 for r in self.requests if not r.answered_by_proxy and path_part in r.path)

    def answer(
        self,
        status: int,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
        times: int = -1,
        target: str | None = None,
    ) -> None:
        """Answer the next `times` requests (for ever if -1) with this, without forwarding."""
        with self._lock:
            self._canned.append(Canned(status, body, dict(headers or {}), times, target))

    def reset(self, faults: Faults | None = None) -> None:
        """New faults, no canned answers, cleared counters; blackholed connections released."""
        with self._lock:
            self.faults = faults or Faults()
            self._canned.clear()
            self.requests.clear()
            self.connections = 0
            held, self._held = self._held, []
        for sock in held:
            _abort(sock)

    def refuse_for(self, seconds: float) -> threading.Thread:
        """Stop listening now, so the kernel refuses connections, and listen again on the same
        port `seconds` later, in the background. Returns once the listener is closed (the state
        the test needs), with the thread that reopens it: join it; `.reopened` is set then."""
        self._stop_listening()
        self.reopened.clear()

        def reopen() -> None:
            if self._closing.wait(seconds):  # closed meanwhile: stay closed
                return
            self._server = self._listen(self.port)
            self.reopened.set()

        thread = threading.Thread(target=reopen, daemon=True)
        thread.start()
        return thread

    def close(self) -> None:
        self._closing.set()
        self.reset()
        self._stop_listening()

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _listen(self, port: int = 0) -> _Server:
        server = _Server(("127.0.0.1", port), _handler(self))
        server.proxy = self
        self.port = server.server_address[1]
        # A short poll: shutdown() waits for the loop to notice, up to one poll interval.
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
        return server

    def _stop_listening(self) -> None:
        """Close the listening socket; returns once the kernel refuses new connections."""
        self._server.shutdown()
        self._server.server_close()

    def _take_connection(self, sock: socket.socket) -> bool:
        """Count a new connection; False if a fault swallowed it."""
        with self._lock:
            self.connections += 1
            faults = self.faults
            if faults.die_after == 0 or faults.reset_connections > 0:
                faults.reset_connections -= 1
                _abort(sock)
                return False
            if faults.blackhole_all or faults.blackhole_connections > 0:
                faults.blackhole_connections = max(0, faults.blackhole_connections - 1)
                self._held.append(sock)
                return False
        return True

    def _alive(self) -> bool:
        """Whether a request may reach the upstream now (see Faults.die_after)."""
        with self._lock:
            if self.faults.die_after is None:
                return True
            if self.faults.die_after == 0:
                return False
            self.faults.die_after -= 1
            return True

    def _decide(
        self, method: str, path: str, target: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[float, Canned | None]:
        """Record the request; the latency to add and the answer to give instead of forwarding
        (RESET: drop the connection)."""
        with self._lock:
            faults = self.faults
            canned: Canned | None = None
            if faults.reset_requests > 0:
                faults.reset_requests -= 1
                canned = RESET
            elif faults.status_requests > 0:
                faults.status_requests -= 1
                headers = {"Content-Type": "application/json"}
                if faults.retry_after is not None:
                    headers["Retry-After"] = f"{faults.retry_after:g}"
                canned = Canned(faults.status, b'{"errors":["injected"]}', headers, 1, None)
            else:
                for candidate in self._canned:
                    if candidate.times != 0 and candidate.target in (None, target):
                        candidate.times -= 1 if candidate.times > 0 else 0
                        canned = candidate
                        break
            self.requests.append(
                Seen(method, path, target, canned is not None, dict(headers), body)
            )
            return faults.latency, canned


def _handler(proxy: FaultProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the real servers allow
        disable_nagle_algorithm = True  # else each answer's body waits ~40 ms for a delayed ACK

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _forward(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            target = self.headers.get("X-Amz-Target", "")
            sent = {name.lower(): value for name, value in self.headers.items()}
            latency, canned = proxy._decide(self.command, self.path, target, sent, body)
            gate = proxy.gate
            if gate is not None:
                gate.enter()
            try:
                if latency:
                    time.sleep(latency)
                if canned is RESET or (canned is None and not proxy._alive()):
                    self.close_connection = True
                    _abort(self.connection)
                    return
                if canned is not None:
                    status, headers, answer = canned.status, dict(canned.headers), canned.body
                else:
                    status, headers, answer = self._upstream(body)
            finally:
                if gate is not None:
                    gate.leave()
            self.send_response(status)
            for name, value in headers.items():
                if name.lower() not in _HOP_BY_HOP:
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def _upstream(self, body: bytes) -> tuple[int, dict[str, str], bytes]:
            connection = http.client.HTTPConnection(
                proxy.upstream_host, proxy.upstream_port, timeout=60
            )
            try:
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                headers["Host"] = f"{proxy.upstream_host}:{proxy.upstream_port}"
                connection.request(self.command, self.path, body=body, headers=headers)
                response = connection.getresponse()
                return response.status, dict(response.getheaders()), response.read()
            finally:
                connection.close()

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _forward

    return Handler


def _abort(sock: socket.socket) -> None:
    """Close with RST rather than FIN, as a crashed peer or a middlebox would."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
