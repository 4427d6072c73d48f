"""Resolution: dedupe references, check each against the backend, fetch them all in one call."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from launcher.errors import BadReference, Failures, LaunchError

if TYPE_CHECKING:
    from launcher.backends import Backend, Secret
    from launcher.refs import Ref

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
