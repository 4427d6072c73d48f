"""The `file` backend: one file per secret under a directory (systemd credentials, mounted secrets)."""

from __future__ import annotations

import errno
import os
from collections.abc import Mapping, Sequence
from typing import ClassVar

from launcher.backends import Backend, Secret, reject_field, reject_port, reject_version
from launcher.errors import (
    AccessDenied,
    BackendFailed,
    BadReference,
    Failures,
    LaunchError,
    SecretNotFound,
)
from launcher.files import Unreadable, read_regular
from launcher.refs import URL, VALUE, Ref

DEFAULT_DIRECTORY = "/run/secrets"  # Docker and Compose secrets
MAX_SECRET_BYTES = 16 * 1024 * 1024


class FileBackend(Backend):
    """secret://<name>[/<name>...] reads <directory>/<name>/...; symlinks may not leave it."""

    name: ClassVar[str] = "file"

    @property
    def directory(self) -> str:
        return (
            self.environ.get("KMS_SECRETS_DIR")
            or self.environ.get("CREDENTIALS_DIRECTORY")
            or DEFAULT_DIRECTORY
        )

    def check(self, ref: Ref) -> None:
        reject_field(ref)
        reject_port(ref)
        reject_version(ref, "a file has only its current content")
        for segment in ref.segments:
            if segment in (".", "..") or "/" in segment or "\0" in segment:
                raise BadReference(
                    f"file names may not contain '/', '.' or '..' ({segment!r})", ref=ref.text
                )

    def fetch(self, refs: Sequence[Ref]) -> Mapping[Ref, Secret]:
        self.credentials_used = not self.environ.get("KMS_SECRETS_DIR") and bool(
            self.environ.get("CREDENTIALS_DIRECTORY")
        )
        root = os.path.realpath(self.directory)
        values: dict[Ref, Secret] = {}
        failures: list[LaunchError] = []
        for ref in refs:
            try:
                value, status = self._read(root, ref)
            except LaunchError as error:
                failures.append(error)
                continue
            # Files written by editors and `echo` end in a newline nobody meant as part of the
            # secret; secret+file:// delivers the bytes exactly as stored.
            if ref.scheme in (VALUE, URL) and value.endswith(b"\n"):
                value = value[:-1]
            if self.credentials_used:
                # systemd gives every unit (and every start) a fresh copy of its credentials:
                # a new inode and mtime each time, though nothing changed. Without hashing the
                # content there is no identity to record, so none is: a drift check never
                # restarts on these (README: rotating systemd credentials).
                values[ref] = Secret(value)
            else:
                values[ref] = Secret(value, _version(status), status.st_mtime)
        if failures:
            raise Failures(failures, resolved=values)
        return values

    def _read(self, root: str, ref: Ref) -> tuple[bytes, os.stat_result]:
        path = os.path.realpath(os.path.join(root, *ref.segments))
        if os.path.commonpath([root, path]) != root:
            raise BadReference(f"resolves outside {root}", ref=ref.text)
        try:
            return read_regular(path, MAX_SECRET_BYTES)
        except Unreadable as error:
            raise _unreadable(error, path, ref) from None


def _unreadable(error: Unreadable, path: str, ref: Ref) -> LaunchError:
    why = f"{path}: {error.strerror}"
    if error.errno == errno.ENOENT:
        return SecretNotFound(f"no file {path}", ref=ref.text)
    if error.errno in (errno.EACCES, errno.EPERM):
        return AccessDenied(f"cannot read {why}", ref=ref.text)
    if error.errno in (errno.EINVAL, errno.EFBIG, errno.ENOTDIR, errno.ELOOP):
        return SecretNotFound(why, ref=ref.text)  # not a regular file, or too large for one
    return BackendFailed(why, ref=ref.text)  # EIO and the like: the store itself failed


def _version(status: os.stat_result) -> str:
    """What changes when the file is replaced or rewritten, without hashing its content: a new
    file (Kubernetes' atomic swap, `mv`) has a new inode, an edit a new size or mtime."""
    return f"{status.st_dev}:{status.st_ino}:{status.st_size}:{status.st_mtime_ns}"
