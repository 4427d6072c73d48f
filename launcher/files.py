"""Reading files we do not trust: non-blocking, regular files only, size-capped, never quoted."""

from __future__ import annotations

import errno
import os
import stat

from launcher.errors import NotConfigured

# A token, key ID, JWT or PEM bundle is a few KiB; this leaves room for certificate chains.
MAX_CREDENTIAL_BYTES = 1024 * 1024


class Unreadable(OSError):
    """A file that is missing, not a regular file, too large, or failed to read. Its message is
    our own words (the OS's reason or the file's kind), never the file's bytes."""


def read_regular(path: str, limit: int) -> tuple[bytes, os.stat_result]:
    """The bytes of the regular file at `path` (at most `limit`) and its status, or Unreadable.

    O_NONBLOCK so that opening a FIFO returns at once instead of waiting for a writer; fstat on
    the opened descriptor (not the path) so the check and the read see the same file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as error:
        reason = error.strerror or type(error).__name__
        if error.errno == errno.ENOENT:
            raise Unreadable(error.errno, "no such file") from None
        if error.errno == errno.EISDIR:
            raise Unreadable(error.errno, "is a directory, not a regular file") from None
        raise Unreadable(error.errno, f"cannot open: {reason}") from None
    try:
        status = os.fstat(fd)  # of the file read, not of a path that may be swapped meanwhile
        mode = status.st_mode
        if not stat.S_ISREG(mode):
            kind = "a directory" if stat.S_ISDIR(mode) else "a FIFO, socket or device"
            raise Unreadable(errno.EINVAL, f"is {kind}, not a regular file")
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, min(limit + 1 - size, 1024 * 1024))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise Unreadable(errno.EFBIG, f"is larger than {_size(limit)}")
        return b"".join(chunks), status
    except Unreadable:
        raise
    except OSError as error:  # EIO, EISDIR on odd filesystems, /proc files that refuse reads
        raise Unreadable(
            error.errno, f"cannot read: {error.strerror or type(error).__name__}"
        ) from None
    finally:
        os.close(fd)


def read_credential(path: str, what: str) -> str | None:
    """A credential file's text with surrounding whitespace dropped; None if it does not exist.
    Anything else wrong with it is NotConfigured (78) naming `what` and the path, never a byte."""
    try:
        data, _ = read_regular(path, MAX_CREDENTIAL_BYTES)
    except Unreadable as error:
        if error.errno == errno.ENOENT:
            return None
        raise NotConfigured(f"{what} ({path}): {error.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        # Python's decode error quotes the offending bytes: say where, never what.
        raise NotConfigured(f"{what} ({path}): not UTF-8 text") from None
    return text.strip() or None


def check_credential_file(path: str, what: str) -> None:
    """Fail now (78) if a file an SDK will read for credentials is not a readable regular file
    of sane size: the SDK itself would block on a FIFO or read a huge file whole."""
    if read_credential(path, what) is None:
        raise NotConfigured(f"{what} ({path}): no such file, or empty")


def _size(limit: int) -> str:
    return f"{limit // 2**20} MiB" if limit >= 2**20 else f"{limit} bytes"
