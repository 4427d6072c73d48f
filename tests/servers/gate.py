"""Hold requests until a client has a given number in flight, so a concurrency test observes the
client's real parallelism on any machine, busy or not, instead of hoping latency exposes it."""

from __future__ import annotations

import threading
import time


class InFlightGate:
    """Every request waits until `target` are in flight at once; from then on the gate stays open
    and each request is still held `linger` seconds, so a request beyond the client's cap, were
    there one, would overlap them and raise `peak` above `target`. If the client never reaches
    `target`, requests are released after `fallback` seconds and `peak` shows how far it got."""

    def __init__(self, target: int, linger: float = 0.3, fallback: float = 10.0) -> None:
        self.target = target
        self.linger = linger
        self.fallback = fallback
        self.peak = 0
        self.opened = threading.Event()
        self._in_flight = 0
        self._lock = threading.Lock()

    def enter(self) -> None:
        with self._lock:
            self._in_flight += 1
            self.peak = max(self.peak, self._in_flight)
            if self._in_flight >= self.target:
                self.opened.set()
        self.opened.wait(self.fallback)
        time.sleep(self.linger)

    def leave(self) -> None:
        with self._lock:
            self._in_flight -= 1
