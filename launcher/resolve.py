"""Resolution: dedupe references, then fetch them within one deadline, retrying what is transient."""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import TYPE_CHECKING, TypeVar

from launcher.errors import BackendUnavailable, BadReference, Failures, LaunchError

if TYPE_CHECKING:
    from launcher.backends import Backend, Secret
    from launcher.refs import Ref

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)

ATTEMPT_TIMEOUT = 5.0  # one attempt's budget: a dead connection costs this, not the whole deadline
BACKOFF_BASE = 0.1
BACKOFF_CAP = 4.0
MIN_ATTEMPT = 0.05  # below this, another attempt cannot finish: give up instead
CONCURRENCY = 16  # requests in flight per backend; also the size of each backend's connection pool


class Deadline:
    """One wall-clock budget shared by every request of a run."""

    def __init__(self, seconds: float) -> None:
        self.started = time.monotonic()
        self.at = self.started + seconds

    def remaining(self) -> float:
        return max(0.0, self.at - time.monotonic())

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def attempt_timeout(self, cap: float = ATTEMPT_TIMEOUT) -> float:
        """The timeout for one attempt: a few seconds, never more than what is left."""
        return max(min(cap, self.remaining()), MIN_ATTEMPT)


def retry(deadline: Deadline, attempt: Callable[[float], T]) -> T:
    """Run attempt(timeout) until it succeeds. BackendUnavailable is retried after a backoff
    (exponential, full jitter, at least the server's Retry-After) while the deadline allows,
    the last wait cut short so the whole deadline is used; any other error is final at once."""
    tries = 0
    while True:
        tries += 1
        try:
            return attempt(deadline.attempt_timeout())
        except BackendUnavailable as error:
            import random  # only once something failed: keeps the common path's start-up lean

            room = deadline.remaining() - MIN_ATTEMPT  # what a wait may use and still try again
            wait_at_least = error.retry_after or 0.0
            if room <= 0 or wait_at_least > room:
                raise BackendUnavailable(
                    f"{error.message} (gave up after {tries} attempt{'s' * (tries > 1)}"
                    f" in {deadline.elapsed():.1f}s)",
                    ref=error.ref,
                ) from None
            backoff = random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (tries - 1)))  # noqa: S311
            time.sleep(min(max(backoff, wait_at_least), room))


def concurrently(
    work: Callable[[K], T], items: Sequence[K], limit: int = CONCURRENCY
) -> tuple[dict[K, T], list[LaunchError]]:
    """Run work(item) for every item on at most `limit` threads; results and failures apart."""
    results: dict[K, T] = {}
    failures: list[LaunchError] = []

    def one(item: K) -> None:
        try:
            results[item] = work(item)
        except LaunchError as error:
            failures.append(error)

    if len(items) <= 1 or limit <= 1:
        for item in items:
            one(item)
    else:
        from concurrent.futures import ThreadPoolExecutor  # not needed for one item or `file`

        with ThreadPoolExecutor(max_workers=min(limit, len(items))) as pool:
            for future in [pool.submit(one, item) for item in items]:
                future.result()  # re-raise bugs; LaunchErrors were collected above
    return results, failures


def resolve(backend: Backend, wanted: Iterable[Ref]) -> dict[Ref, Secret]:
    """Every distinct reference's value, fetched in one call, or Failures naming each miss."""
    unique = list(dict.fromkeys(wanted))
    malformed: list[LaunchError] = []
    for ref in unique:
        try:
            backend.check(ref)
        except BadReference as error:
            error.ref = error.ref or ref.text
            malformed.append(error)
    if malformed:  # fail before any request: a typo should not cost a round trip to the vault
        raise Failures(malformed)
    values = dict(backend.fetch(unique))
    missing = [ref for ref in unique if ref not in values]
    if missing:
        raise Failures(
            LaunchError(f"backend {backend.name} returned no value", ref=ref.text)
            for ref in missing
        )
    return values
