"""The `file` backend: one file per secret under a directory (systemd credentials, mounted secrets)."""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping, Sequence
from typing import ClassVar

from launcher.backends import Backend, Secret, reject_field, reject_port
from launcher.errors import AccessDenied, BadReference, Failures, LaunchError, SecretNotFound
from launcher.refs import VALUE, Ref

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
                value = self._read(root, ref)
            except LaunchError as error:
                failures.append(error)
                continue
            # Files written by editors and `echo` end in a newline nobody meant as part of the
            # secret; secret+file:// delivers the bytes exactly as stored.
            if ref.scheme == VALUE and value.endswith(b"\n"):
                value = value[:-1]
            values[ref] = Secret(value)
        if failures:
            raise Failures(failures, resolved=values)
        return values

    def _read(self, root: str, ref: Ref) -> bytes:
        path = os.path.realpath(os.path.join(root, *ref.segments))
        if os.path.commonpath([root, path]) != root:
            raise BadReference(f"resolves outside {root}", ref=ref.text)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            raise SecretNotFound(f"no file {path}", ref=ref.text) from None
        except PermissionError:
            raise AccessDenied(f"cannot read {path}: permission denied", ref=ref.text) from None
        except OSError as error:
            raise SecretNotFound(f"cannot open {path}: {error.strerror}", ref=ref.text) from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise SecretNotFound(f"{path} is not a regular file", ref=ref.text)
        with os.fdopen(fd, "rb") as file:
            data = file.read(MAX_SECRET_BYTES + 1)
        if len(data) > MAX_SECRET_BYTES:
            raise BadReference(
                f"{path} is larger than {MAX_SECRET_BYTES // 2**20} MiB", ref=ref.text
            )
        return data
