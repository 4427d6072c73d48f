"""Time and concurrency for a run: one absolute deadline, capped attempts, retries, worker threads."""

from __future__ import annotations

import contextlib
import contextvars
import os
import threading
import time
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

from launcher.errors import BackendUnavailable, LaunchError

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)

ATTEMPT_TIMEOUT = 5.0  # one attempt's budget: a dead connection costs this, not the whole deadline
BACKOFF_BASE = 0.1
BACKOFF_CAP = 4.0
MIN_ATTEMPT = 0.05  # below this, another attempt cannot finish: give up instead
CONCURRENCY = 16  # requests in flight per backend; also the size of each backend's connection pool
# What one attempt may receive, headers included: a KV read or KMIP answer is a few KiB, and the
# largest secret a config can hold is 16 MiB (the config's own cap).
MAX_ANSWER_BYTES = 17 * 1024 * 1024
# How long past the deadline the run may take to report and exit, whatever a backend's SDK does.
GRACE = 0.25


class Deadline:
    """One wall-clock budget shared by every request of a run, counted from the launcher's exec
    when the entry point said so (count_from_process_start), else from now."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.started = _process_started if _process_started is not None else time.monotonic()
        self.at = self.started + seconds

    def remaining(self) -> float:
        return max(0.0, self.at - time.monotonic())

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def attempt_timeout(self, cap: float = ATTEMPT_TIMEOUT) -> float:
        """The timeout for one attempt: a few seconds, never more than what is left."""
        return max(min(cap, self.remaining()), MIN_ATTEMPT)


_process_started: float | None = None


def count_from_process_start() -> None:
    """Make deadlines count from this process's exec, not from when they are made: the
    interpreter and the imports before the first deadline take a few hundred ms, and
    "the run ends by --timeout + 1 s" is a promise about the whole run."""
    global _process_started
    _process_started = time.monotonic() - _process_age()


def _process_age() -> float:
    """Seconds since this process started (field 22 of /proc/self/stat, in clock ticks since
    boot); 0 where that cannot be read."""
    try:
        with open("/proc/self/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()  # after the command name
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")
        return max(0.0, time.clock_gettime(time.CLOCK_BOOTTIME) - started)
    except (OSError, ValueError, IndexError):
        return 0.0


class AnswerTooLarge(OSError):
    """An attempt received more than MAX_ANSWER_BYTES: raised inside the SDK's socket read."""


@dataclass
class Window:
    """The wall-clock end and byte budget of the attempt running on this thread. Sockets consult
    it on every read (launcher.backends._sockets), because a socket timeout bounds one read, and
    a peer trickling a byte at a time would reset it for ever."""

    ends_at: float
    budget: int = MAX_ANSWER_BYTES

    def left(self) -> float:
        return self.ends_at - time.monotonic()

    def received(self, count: int) -> None:
        self.budget -= count
        if self.budget < 0:
            raise AnswerTooLarge(f"answer larger than {MAX_ANSWER_BYTES // 2**20} MiB")


_window: contextvars.ContextVar[Window | None] = contextvars.ContextVar("window", default=None)


def current_window() -> Window | None:
    return _window.get()


@contextlib.contextmanager
def window(seconds: float) -> Iterator[Window]:
    """Cap everything this thread receives in the block at `seconds` of wall-clock time."""
    current = Window(time.monotonic() + seconds)
    token = _window.set(current)
    try:
        yield current
    finally:
        _window.reset(token)


def retry(deadline: Deadline, attempt: Callable[[float], T]) -> T:
    """Run attempt(timeout) in a capped window until it succeeds. BackendUnavailable is retried
    after a backoff (exponential, full jitter, at least the server's Retry-After) while the
    deadline allows, the last wait cut short so the whole deadline is used; any other error is
    final at once. Giving up, the report says what the backend answered, if any attempt got an
    answer, even when the last attempt was cut short by the deadline."""
    tries = 0
    answered: BackendUnavailable | None = None  # the latest failure the backend itself reported
    while True:
        tries += 1
        timeout = deadline.attempt_timeout()
        try:
            with window(timeout):
                return attempt(timeout)
        except BackendUnavailable as error:
            if error.answered:
                answered = error
                global _latest_answer
                _latest_answer = error
            room = deadline.remaining() - MIN_ATTEMPT  # what a wait may use and still try again
            wait_at_least = error.retry_after or 0.0
            if room <= 0 or wait_at_least > room:
                raise _gave_up(error, answered, tries, deadline) from None
            time.sleep(min(max(backoff(tries), wait_at_least), room))


_latest_answer: BackendUnavailable | None = None


def latest_answer() -> BackendUnavailable | None:
    """The latest transient failure a backend itself answered in this process (HTTP 500,
    throttling), for a report made when the deadline cuts resolution off from outside."""
    return _latest_answer


def backoff(tries: int) -> float:
    """The wait after failed attempt number `tries`: exponential with full jitter, capped."""
    import random  # only once something failed: keeps the common path's start-up lean

    # The exponent is capped too: 2.0 ** 1024 overflows, and BACKOFF_CAP is reached long before.
    return random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2.0 ** min(tries - 1, 32)))  # noqa: S311


def _gave_up(
    last: BackendUnavailable, answered: BackendUnavailable | None, tries: int, deadline: Deadline
) -> BackendUnavailable:
    what = last.message
    if answered is not None and answered is not last:
        what = f"{answered.message}; the last attempt: {last.message}"
    if last.retry_after is not None and last.retry_after > deadline.remaining():
        what += f" (asked to retry after {_seconds(last.retry_after)}, past the deadline)"
    return BackendUnavailable(
        f"{what} (gave up after {tries} attempt{'s' * (tries > 1)} in {deadline.elapsed():.1f}s)",
        ref=last.ref,
        answered=answered is not None,
    )


def _seconds(value: float) -> str:
    return f"{value:.0f}s" if value < 10**6 else "a very long time"


def concurrently(
    work: Callable[[K], T], items: Sequence[K], limit: int = CONCURRENCY
) -> tuple[dict[K, T], list[LaunchError]]:
    """Run work(item) for every item on at most `limit` threads; results and failures apart.
    The threads are daemons: if the run's deadline passes while one is stuck inside an SDK, the
    launcher reports and exits without waiting for it."""
    results: dict[K, T] = {}
    failures: list[LaunchError] = []
    pending = list(reversed(items))
    lock = threading.Lock()
    crashes: list[BaseException] = []

    def worker() -> None:
        while True:
            with lock:
                if not pending or crashes:
                    return
                item = pending.pop()
            try:
                result = work(item)
            except LaunchError as error:
                with lock:
                    failures.append(error)
            except BaseException as error:  # a bug: re-raised on the caller's thread
                with lock:
                    crashes.append(error)
            else:
                with lock:
                    results[item] = result

    count = min(limit, len(items))
    if count <= 1:
        worker()
    else:
        threads = [threading.Thread(target=worker, daemon=True) for _ in range(count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    if crashes:
        raise crashes[0]
    return results, failures


def within(deadline: Deadline, work: Callable[[], T], expired: Callable[[], LaunchError]) -> T:
    """work(), or expired() raised once the deadline (plus a short grace) has passed. Backstop
    for what no socket window reaches (name resolution, an SDK's own waits): the run ends by
    the deadline whatever the peer or the SDK does. work() runs on a daemon thread left behind."""
    outcome: list[T] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            outcome.append(work())
        except BaseException as error:
            failure.append(error)

    thread = threading.Thread(target=run, name="resolve", daemon=True)
    thread.start()
    thread.join(deadline.remaining() + GRACE)
    if thread.is_alive():
        raise expired()
    if failure:
        raise failure[0]
    return outcome[0]


__all__ = [
    "ATTEMPT_TIMEOUT",
    "CONCURRENCY",
    "AnswerTooLarge",
    "Deadline",
    "Window",
    "concurrently",
    "current_window",
    "retry",
    "window",
    "within",
]
