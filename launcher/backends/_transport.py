"""Transport failures shared by the remote backends: cause chains, TLS, sockets, Retry-After."""

from __future__ import annotations

import math
import os
import re
import socket
import ssl
import time
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urljoin, urlsplit

from launcher.backends import _sockets
from launcher.deadline import MAX_ANSWER_BYTES, AnswerTooLarge
from launcher.errors import BackendFailed, BackendUnavailable, LaunchError

_sockets.install()  # every remote backend imports this module

# Standard library only, and nothing an SDK has not loaded already: importing this is free, and
# email / http.client are imported only once something has failed.

_HEADER_VALUE = re.compile(r"[\x21-\x7e]+")  # what an HTTP header carries of a token
_UNPRINTABLE = re.compile(r"[^\x21-\x7e]")  # what a report may show of a Location header
_DELTA_SECONDS = re.compile(r"[0-9]{1,9}")  # RFC 9110: 1*DIGIT; more than 30 years is absurd
# getaddrinfo's "no such name" answers; any other resolver failure may pass.
_NO_SUCH_HOST = {socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)}


def causes(error: BaseException) -> Iterator[BaseException]:
    """The error and everything it wraps, each once: SDKs wrap urllib3, which wraps the socket or
    TLS error, in __cause__ / __context__, in args, in urllib3's `.reason` (MaxRetryError) or in
    botocore's `.kwargs` (error=...)."""
    seen: set[int] = set()
    todo: list[BaseException] = [error]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        linked: list[Any] = [
            current.__cause__,
            current.__context__,
            getattr(current, "reason", None),
        ]
        kwargs = getattr(current, "kwargs", None)
        if isinstance(kwargs, Mapping):
            linked.extend(kwargs.values())
        linked.extend(current.args)
        todo.extend(item for item in linked if isinstance(item, BaseException))


def tls_error(
    error: BaseException,
    *,
    where: str,
    ca_variable: str,
    check: str,
    ref: str | None = None,
) -> LaunchError:
    """Our error for a TLS connection to `where` that failed. Only a handshake cut short is
    retried: a certificate or TLS setting that fails now will fail on every attempt. Judged by
    the exception types in the cause chain; of their text only OpenSSL's fixed reason is used."""
    chain = list(causes(error))
    for cause in chain:
        if isinstance(cause, ssl.SSLCertVerificationError):
            why = cause.verify_message or "certificate verify failed"
            return BackendFailed(
                f"the TLS certificate of {where} failed verification: set {ca_variable} to the"
                f" CA that signed it (it is not trusted: {why})",
                ref=ref,
            )
    if any(isinstance(cause, ssl.SSLEOFError | ssl.SSLZeroReturnError) for cause in chain):
        return BackendUnavailable(
            f"TLS handshake with {where} was cut short", ref=ref, answered=False
        )
    for cause in chain:  # the TLS library's reason: WRONG_VERSION_NUMBER, a plain-HTTP port...
        if isinstance(cause, ssl.SSLError):
            reason = cause.reason or type(cause).__name__
            return BackendFailed(
                f"TLS handshake with {where} failed ({reason}): check {check}", ref=ref
            )
    for cause in chain:  # ...else the file error of a CA bundle or client certificate
        if isinstance(cause, OSError) and cause.strerror:
            return BackendFailed(
                f"TLS with {where} failed ({cause.strerror}): check {check}", ref=ref
            )
    return BackendFailed(
        f"TLS with {where} failed ({type(error).__name__}): check {check}", ref=ref
    )


def unreachable(
    error: BaseException, *, where: str, timeout: float, ref: str | None = None
) -> LaunchError:
    """The (retried) error for a connection to `where` that failed below TLS and HTTP; final
    if the answer outgrew what any secret store sends."""
    from http.client import HTTPException, IncompleteRead, RemoteDisconnected

    chain = list(causes(error))
    if any(isinstance(cause, AnswerTooLarge) for cause in chain):
        return BackendFailed(
            f"{where} sent an answer larger than {MAX_ANSWER_BYTES // 2**20} MiB", ref=ref
        )
    for cause in chain:
        # Not HTTP at all (a status line that is not one, header lines past 64 KiB, more than
        # 100 headers): the address is wrong, and asking again will not change the answer.
        # A reset (RemoteDisconnected) or a truncated body (IncompleteRead) may pass: retried.
        if isinstance(cause, HTTPException) and not isinstance(
            cause, RemoteDisconnected | IncompleteRead
        ):
            return BackendFailed(
                f"{where} did not answer in HTTP ({type(cause).__name__}): is the address right?",
                ref=ref,
            )
    return BackendUnavailable(
        f"cannot reach {where}: {socket_reason(error, timeout)}", ref=ref, answered=False
    )


def socket_reason(error: BaseException, timeout: float) -> str:
    """Why a connection failed, in the OS's words (refused, reset, unknown host) or ours: never
    the URL or anything the server sent, both of which SDK messages quote."""
    from http.client import IncompleteRead, RemoteDisconnected

    chain = list(causes(error))
    if any(isinstance(cause, TimeoutError) for cause in chain):  # connect or read, any SDK
        return f"no complete answer within {timeout:.1f}s"
    for cause in chain:
        if isinstance(cause, socket.gaierror):  # its errno is getaddrinfo's, not strerror's
            return "unknown host" if cause.errno in _NO_SUCH_HOST else "name resolution failed"
        if isinstance(cause, RemoteDisconnected):  # a reset without an errno
            return "the server closed the connection"
        if isinstance(cause, IncompleteRead):
            return "the answer was cut short"
        if isinstance(cause, OSError) and not isinstance(cause, ssl.SSLError) and cause.errno:
            return os.strerror(cause.errno).lower()  # SSLError's errno is OpenSSL's, not the OS's
    return type(error).__name__


def fits_in_header(value: str) -> bool:
    """Whether an HTTP header can carry `value` as a token (visible ASCII): anything else makes
    http.client fail with an encode error that quotes the value."""
    return _HEADER_VALUE.fullmatch(value) is not None


def redirected(
    status: int, location: str | None, *, base: str, where: str, setting: str, ref: str | None = None
) -> LaunchError:
    """The (final) error for a redirect we did not follow: where it pointed (scheme, host, port
    and path; never the query, which may carry anything) and the setting to correct."""
    target = "nowhere (no Location)"
    if location:
        try:
            parts = urlsplit(urljoin(base, location))
            target = f"{parts.scheme}://{parts.netloc}{parts.path}"
        except ValueError:
            target = "an address that is not a URL"
        target = _UNPRINTABLE.sub("?", target)[:200]
    return BackendFailed(
        f"{where} redirected to {target} (HTTP {status}); kms-launch does not follow redirects,"
        f" so credentials stay with {setting}: set it to the address that answers",
        ref=ref,
    )


def retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), if it holds a sane one.
    A peer may send anything: a negative, fractional, huge or malformed value, or a date in the
    year 100000000000, is treated as no header (None) rather than trusted or crashed on."""
    value = (value or "").strip()
    if _DELTA_SECONDS.fullmatch(value):
        return float(value)
    if not value or len(value) > 64:
        return None
    import email.utils

    try:
        when = email.utils.parsedate_to_datetime(value)
        seconds = when.timestamp() - time.time()
    except (TypeError, ValueError, OverflowError, IndexError):
        return None
    return max(0.0, seconds) if math.isfinite(seconds) else None
