"""A loopback HTTP(S) server that misbehaves on purpose: trickles, stalls, redirects, floods, lies.

Each accepted connection is handed to a scripted behaviour. Everything it receives is recorded,
so a test can prove what did (not) reach it. Every loop it runs is bounded in time and stops as
soon as the client goes away."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

# No behaviour keeps a connection longer than this, whatever the client does.
MAX_HOLD = 30.0

Behaviour = Callable[["Connection"], None]


@dataclass
class Connection:
    """One accepted connection: the socket, what the client sent, and helpers to misbehave."""

    sock: socket.socket
    request: bytes = b""
    closed: threading.Event = field(default_factory=threading.Event)

    def read_request(self) -> bytes:
        """The request head and body (by Content-Length), as far as the client sends it."""
        data = b""
        self.sock.settimeout(5)
        with contextlib.suppress(OSError):
            while b"\r\n\r\n" not in data:
                chunk = self.sock.recv(65536)
                if not chunk:
                    break
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip() or 0)
            while len(body) < length:
                chunk = self.sock.recv(65536)
                if not chunk:
                    break
                body += chunk
            data = head + b"\r\n\r\n" + body
        self.request = data
        return data

    def send(self, data: bytes) -> bool:
        """Send; False once the client has gone."""
        try:
            self.sock.sendall(data)
            return True
        except OSError:
            return False

    def hold(self, seconds: float = MAX_HOLD) -> None:
        """Keep the connection open, saying nothing, until the client leaves or time is up."""
        self.sock.settimeout(0.2)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                if self.sock.recv(65536) == b"":
                    return
            except TimeoutError:
                continue
            except OSError:
                return

    def trickle(self, data: bytes, interval: float = 1.0) -> None:
        """Send `data` one byte per `interval`, never finishing before MAX_HOLD."""
        end = time.monotonic() + MAX_HOLD
        for byte in data:
            if time.monotonic() > end or not self.send(bytes([byte])):
                return
            time.sleep(interval)


def http_response(status: int, headers: dict[str, str] | None = None, body: bytes = b"") -> bytes:
    lines = [f"HTTP/1.1 {status} Hostile"]
    fields = {"Content-Length": str(len(body)), "Connection": "close", **(headers or {})}
    lines += [f"{name}: {value}" for name, value in fields.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


# -- behaviours -------------------------------------------------------------------------------


def stall(connection: Connection) -> None:
    """Accept, read the request, never answer."""
    connection.read_request()
    connection.hold()


def stall_handshake(connection: Connection) -> None:
    """Accept TCP and never speak (a TLS client waits for a ServerHello that never comes)."""
    connection.hold()


def trickle_headers(connection: Connection) -> None:
    """Answer one byte a second, starting with the status line."""
    connection.read_request()
    connection.trickle(http_response(200, {"Content-Type": "application/json"}, b"{}" * 100))


def trickle_body(connection: Connection) -> None:
    """Headers at once, then the body one byte a second."""
    connection.read_request()
    body = b'{"data": {"data": {"value": "x"}}}' + b" " * 1000
    head = http_response(200, {"Content-Type": "application/json"}, body)[: -len(body)]
    if connection.send(head):
        connection.trickle(body)


def headers_then_nothing(connection: Connection) -> None:
    """Complete headers announcing a body, then silence."""
    connection.read_request()
    if connection.send(
        http_response(200, {"Content-Type": "application/json", "Content-Length": "100"})
    ):
        connection.hold()


def endless_chunked(connection: Connection) -> None:
    """A chunked body that never ends, sent as fast as the client reads."""
    connection.read_request()
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"1\r\n[\r\n"
    )
    if not connection.send(head):
        return
    chunk = b'"xxxxxxxxxxxxxxxx",' * 3000
    frame = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    end = time.monotonic() + MAX_HOLD
    while time.monotonic() < end and connection.send(frame):
        pass


def gigabyte(connection: Connection) -> None:
    """Announce a 1 GiB body and send it as fast as the client reads."""
    connection.read_request()
    size = 2**30
    head = http_response(200, {"Content-Type": "application/json", "Content-Length": str(size)})
    if not connection.send(head):
        return
    block = b" " * 65536
    end = time.monotonic() + MAX_HOLD
    sent = 0
    while sent < size and time.monotonic() < end and connection.send(block):
        sent += len(block)


def garbage(connection: Connection) -> None:
    """Bytes that are not HTTP at all."""
    connection.read_request()
    connection.send(bytes(range(256)) * 4)


def answer(status: int, headers: dict[str, str] | None = None, body: bytes = b"") -> Behaviour:
    """A fixed HTTP answer to every request."""

    def behaviour(connection: Connection) -> None:
        connection.read_request()
        connection.send(http_response(status, headers, body))

    return behaviour


def redirect(target: str, status: int = 307) -> Behaviour:
    """Send every request elsewhere."""
    return answer(status, {"Location": target})


class HostileServer:
    """Listen on a loopback address; every connection gets `behaviour` (HTTPS with `context`)."""

    def __init__(
        self,
        behaviour: Behaviour,
        *,
        context: ssl.SSLContext | None = None,
        host: str = "127.0.0.1",
        tls_before_behaviour: bool = True,
    ) -> None:
        self.behaviour = behaviour
        self.context = context
        self.host = host
        self.tls_before_behaviour = tls_before_behaviour
        self.received: list[bytes] = []
        self.connections = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server((host, 0))
        self.port: int = self._listener.getsockname()[1]
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        return f"{'https' if self.context else 'http'}://{self.host}:{self.port}"

    def everything_received(self) -> bytes:
        with self._lock:
            return b"".join(self.received)

    def start(self) -> Self:
        thread = threading.Thread(target=self._accept, daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._listener.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _accept(self) -> None:
        self._listener.settimeout(0.2)
        while not self._stopping.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.connections += 1
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        connection = Connection(sock)
        try:
            if self.context is not None and self.tls_before_behaviour:
                sock.settimeout(5)
                connection.sock = self.context.wrap_socket(sock, server_side=True)
            self.behaviour(connection)
        except (OSError, ssl.SSLError):
            pass
        finally:
            with self._lock:
                self.received.append(connection.request)
            with contextlib.suppress(OSError):
                connection.sock.close()
