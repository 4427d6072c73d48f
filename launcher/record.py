"""The launch record: which config and which secret versions a run used, and what drifted since.

Never a value, and never a hash of one: a short secret is brute-forced from its hash. A record
names each reference, the keys that use it, the backend's version identifier, when that version
was created (where the backend says) and the value's length."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from launcher.errors import InvalidConfig, LaunchError, OutputFailed

FORMAT = 1
MAX_RECORD_BYTES = 16 * 1024 * 1024


class RecordUnreadable(LaunchError):
    """The record to compare against is missing or unreadable."""

    exit_code = 66


@dataclass(frozen=True)
class Entry:
    """One distinct reference as resolved."""

    reference: str
    keys: tuple[str, ...]
    version: str | None
    created: float | None  # epoch seconds, where the backend gives a creation time
    length: int


@dataclass(frozen=True)
class Record:
    """What one launch or check used."""

    time: float
    config_path: str
    config_sha256: str
    backend: str | None
    entries: tuple[Entry, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "time": stamp(self.time),
            "config": {"path": self.config_path, "sha256": self.config_sha256},
            "backend": self.backend,
            "references": [
                {
                    "reference": entry.reference,
                    "keys": list(entry.keys),
                    "version": entry.version,
                    "created": None if entry.created is None else stamp(entry.created),
                    "length": entry.length,
                }
                for entry in self.entries
            ],
        }

    def summary(self) -> str:
        """One line for stderr (and so the journal): the config's digest and each version."""
        versions = ", ".join(
            f"{entry.reference} {'version ' + entry.version if entry.version else 'unversioned'}"
            for entry in self.entries
        )
        return (
            f"config {self.config_path} sha256:{self.config_sha256[:16]};"
            f" {len(self.entries)} references from {self.backend or 'no backend'}"
            + (f": {versions}" if versions else "")
        )


def build(
    *,
    config_path: str,
    config_sha256: str,
    backend: str | None,
    key_paths: Mapping[str, Sequence[str]],
    resolved: Sequence[tuple[str, str | None, float | None, int]],
) -> Record:
    """A record from what a run resolved: (reference, version, created, length) per reference."""
    entries = tuple(
        Entry(reference, tuple(key_paths.get(reference, ())), version, created, length)
        for reference, version, created, length in resolved
    )
    return Record(time.time(), config_path, config_sha256, backend, entries)


def write(record: Record, path: str) -> None:
    """Replace `path` with the record atomically (a temporary file beside it, then rename), so a
    reader sees the old record or the new one, never half of one."""
    import json  # json, tempfile and datetime: only where a record is written or read
    import tempfile

    directory = os.path.dirname(os.path.abspath(path))
    text = json.dumps(record.to_json(), indent=2) + "\n"
    try:
        descriptor, temporary = tempfile.mkstemp(prefix=".launch-", dir=directory)
        try:
            with os.fdopen(descriptor, "w", encoding="utf-8") as file:
                file.write(text)
                file.flush()
                os.fsync(file.fileno())
            os.chmod(temporary, 0o644)  # metadata only: versions, lengths, key paths
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
    except OSError as error:
        raise OutputFailed(
            f"cannot write the launch record {path}: {error.strerror or type(error).__name__}"
        ) from None


def load(path: str) -> Record:
    """A record written by write(), or RecordUnreadable (66) / InvalidConfig (65)."""
    import json

    from launcher.files import Unreadable, read_regular

    try:
        data, _ = read_regular(path, MAX_RECORD_BYTES)
    except Unreadable as error:
        raise RecordUnreadable(f"launch record {path}: {error.strerror}") from None
    try:
        document = json.loads(data)
        return Record(
            time=_epoch(document["time"]),
            config_path=str(document["config"]["path"]),
            config_sha256=str(document["config"]["sha256"]),
            backend=document.get("backend"),
            entries=tuple(
                Entry(
                    reference=str(item["reference"]),
                    keys=tuple(str(key) for key in item["keys"]),
                    version=None if item["version"] is None else str(item["version"]),
                    created=None if item.get("created") is None else _epoch(item["created"]),
                    length=int(item["length"]),
                )
                for item in document["references"]
            ),
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        raise InvalidConfig(f"launch record {path}: not a kms-launch record") from None


@dataclass(frozen=True)
class Change:
    """One difference between a recorded run and now."""

    what: str  # "config", "version", "added", "removed"
    reference: str | None
    keys: tuple[str, ...]
    before: str | None
    after: str | None

    def line(self) -> str:
        place = ", ".join(self.keys) or "config"
        subject = f"{place}: {self.reference}" if self.reference else place
        return f"{subject}: {self.what} {self.before or '-'} -> {self.after or '-'}"


@dataclass(frozen=True)
class Drift:
    """What changed, and what changed too recently to count yet (--settle)."""

    changes: tuple[Change, ...]
    settling: tuple[Change, ...]


def drift(recorded: Record, now: Record, settle: float = 0.0) -> Drift:
    """Compare a recorded run with a fresh resolution. A version created less than `settle`
    seconds ago does not count yet, so that a username and a password rotated seconds apart
    are picked up by one restart; a version without a creation time counts at once."""
    changes: list[Change] = []
    settling: list[Change] = []
    if recorded.config_sha256 != now.config_sha256:
        changes.append(
            Change("config", None, (), recorded.config_sha256[:16], now.config_sha256[:16])
        )
    before = {entry.reference: entry for entry in recorded.entries}
    after = {entry.reference: entry for entry in now.entries}
    for reference, entry in after.items():
        old = before.get(reference)
        if old is None:
            changes.append(Change("added", reference, entry.keys, None, entry.version))
        elif old.version != entry.version:
            change = Change("version", reference, entry.keys, old.version, entry.version)
            young = entry.created is not None and now.time - entry.created < settle
            (settling if young else changes).append(change)
    changes.extend(
        Change("removed", reference, entry.keys, entry.version, None)
        for reference, entry in before.items()
        if reference not in after
    )
    return Drift(tuple(changes), tuple(settling))


def stamp(epoch: float) -> str:
    """An epoch time as ISO 8601 UTC with milliseconds."""
    from datetime import UTC, datetime

    return (
        datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


def _epoch(stamp: Any) -> float:
    from datetime import datetime

    if not isinstance(stamp, str):
        raise TypeError(stamp)
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
