"""A loopback HTTP reverse proxy that records every request, and can add latency or answer for
the upstream (to inject throttling, 5xx or refusals the real servers will not produce)."""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from urllib.parse import urlsplit

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default backlog of 5 drops the SYNs of a burst of concurrent requests,
    # which clients retry a second later: that second would be measured as the backend's.
    request_queue_size = 128


@dataclass(frozen=True)
class Seen:
    """One request as it reached the proxy."""

    method: str
    path: str
    target: str  # X-Amz-Target (the AWS JSON API's operation), or ""


@dataclass
class Canned:
    """An answer given instead of forwarding, `times` more times (-1: for ever)."""

    status: int
    body: bytes
    headers: Mapping[str, str]
    times: int
    target: str | None  # only for requests of this X-Amz-Target, if set


@dataclass
class CountingProxy:
    upstream: str  # http://host:port
    delay: float = 0.0  # seconds added before forwarding each request
    seen: list[Seen] = field(default_factory=list)
    _canned: list[Canned] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: _Server | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("proxy not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def count(self, method: str | None = None, path: str = "", target: str | None = None) -> int:
        """How many requests matched: this method, a path starting with `path`, this target."""
        with self._lock:
            return sum(
                1
                for seen in self.seen
                if (method is None or seen.method == method)
                and seen.path.startswith(path)
                and (target is None or seen.target == target)
            )

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

    def _take_canned(self, target: str) -> Canned | None:
        with self._lock:
            for canned in self._canned:
                if canned.times != 0 and canned.target in (None, target):
                    canned.times -= 1 if canned.times > 0 else 0
                    return canned
            return None

    def __enter__(self) -> CountingProxy:
        proxy = self
        upstream = urlsplit(self.upstream)

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the real servers allow

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                target = self.headers.get("X-Amz-Target", "")
                with proxy._lock:
                    proxy.seen.append(Seen(self.command, self.path, target))
                if proxy.delay:
                    time.sleep(proxy.delay)
                canned = proxy._take_canned(target)
                if canned is not None:
                    status, headers, answer = canned.status, dict(canned.headers), canned.body
                else:
                    status, headers, answer = self._upstream(body)
                self.send_response(status)
                for name, value in headers.items():
                    if name.lower() not in _HOP_BY_HOP:
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def _upstream(self, body: bytes) -> tuple[int, dict[str, str], bytes]:
                connection = http.client.HTTPConnection(
                    upstream.hostname or "127.0.0.1", upstream.port, timeout=60
                )
                try:
                    headers = {
                        k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP
                    }
                    headers["Host"] = upstream.netloc
                    connection.request(self.command, self.path, body=body, headers=headers)
                    response = connection.getresponse()
                    return response.status, dict(response.getheaders()), response.read()
                finally:
                    connection.close()

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _forward

        self._server = _Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
