"""Wall-clock and size caps on every socket an SDK opens, enforced on each read during an attempt."""

from __future__ import annotations

import socket
import ssl
import sys
from typing import Any

from launcher.deadline import Window, current_window

# Why sockets, and not each SDK's timeouts: requests, hvac, botocore and msal all pass a socket
# timeout, which bounds one read. A peer trickling a byte a second, stalling a TLS handshake or
# streaming an endless body resets it for ever (measured: a Vault run with --timeout 2 was still
# alive at 20 s). None of them offers a total timeout (requests declined one, psf/requests#1577).
# All of them read through socket.recv_into or SSLSocket.read, so a cap there reaches every
# SDK, credential provider and redirect alike; outside an attempt's window nothing changes.


def _bounded(sock: socket.socket, window: Window) -> float | None:
    """Shrink the socket's timeout to what is left of the window; return the old one."""
    previous = sock.gettimeout()
    left = window.left()
    if left <= 0:
        raise TimeoutError("the attempt's time is up")
    sock.settimeout(left if previous is None else min(previous, left))
    return previous


class GuardedSocket(socket.socket):
    """A plain socket whose reads respect the current attempt's window."""

    __slots__ = ()  # the same layout as socket.socket, so a live socket can be switched to it

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        window = current_window()
        if window is None:
            return super().recv(bufsize, flags)
        previous = _bounded(self, window)
        try:
            data = super().recv(bufsize, flags)
        finally:
            self.settimeout(previous)
        window.received(len(data))
        return data

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        window = current_window()
        if window is None:
            return super().recv_into(buffer, nbytes, flags)
        previous = _bounded(self, window)
        try:
            count = super().recv_into(buffer, nbytes, flags)
        finally:
            self.settimeout(previous)
        window.received(count)
        return count


class GuardedSSLSocket(ssl.SSLSocket):
    """A TLS socket whose handshake and reads respect the current attempt's window."""

    def do_handshake(self, block: bool = False) -> None:
        window = current_window()
        if window is None:
            return super().do_handshake(block)
        previous = _bounded(self, window)
        try:
            super().do_handshake(block)
        finally:
            self.settimeout(previous)

    def read(self, *args: Any) -> Any:  # (length, buffer): recv and recv_into both land here
        window = current_window()
        if window is None:
            return super().read(*args)
        previous = _bounded(self, window)
        try:
            result = super().read(*args)
        finally:
            self.settimeout(previous)
        window.received(result if isinstance(result, int) else len(result))
        return result


def _on_audit(event: str, args: tuple[Any, ...]) -> None:
    # "socket.connect" is raised for every socket about to connect, whoever opened it.
    if event == "socket.connect":
        sock = args[0]
        if type(sock) is socket.socket:
            sock.__class__ = GuardedSocket


_installed = False


def install() -> None:
    """Guard every socket connected from now on (idempotent; audit hooks cannot be removed)."""
    global _installed
    if _installed:
        return
    _installed = True
    ssl.SSLContext.sslsocket_class = GuardedSSLSocket
    sys.addaudithook(_on_audit)
