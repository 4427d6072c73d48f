"""What the requests-based backends share: a pooled session, the CA bundle, transport errors."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from launcher.backends._transport import fits_in_header, redirected, tls_error, unreachable
from launcher.deadline import CONCURRENCY
from launcher.errors import BackendFailed, LaunchError, NotConfigured
from launcher.files import check_credential_file


def header_value(variable: str, value: str) -> str:
    """`value` if an HTTP header can carry it, else NotConfigured naming where it came from
    (never the value: it is a credential, and Python's own encode error would quote it)."""
    if not fits_in_header(value):
        raise NotConfigured(
            f"{variable} holds characters an HTTP header cannot carry (only visible ASCII)"
        )
    return value


def pooled(session: requests.Session) -> requests.Session:
    """`session`, keeping a connection per concurrent request: requests keeps 10 per host, and a
    full pool makes urllib3 drop connections with a warning on stderr."""
    adapter = HTTPAdapter(pool_maxsize=CONCURRENCY)
    for scheme in ("http://", "https://"):
        session.mount(scheme, adapter)
    return session


class Session(requests.Session):
    """A pooled session that verifies every request with its own `verify` and never follows a
    redirect: a redirect could carry the bearer token elsewhere."""

    def __init__(self, verify: bool | str) -> None:
        super().__init__()
        self.tls_verify = verify
        pooled(self)

    def get_redirect_target(self, resp: requests.Response) -> str | None:
        # requests works out where a 3xx points even when it will not follow it (for
        # Response.next), decoding the Location header as UTF-8 and failing on a hostile one;
        # we never follow, and redirect_error() reads the header itself.
        return None

    def request(self, *args: Any, **kwargs: Any) -> requests.Response:
        # Per request, because requests lets the process's REQUESTS_CA_BUNDLE override a
        # session-level `verify` (and a per-request `True`).
        kwargs["verify"] = self.tls_verify
        kwargs["allow_redirects"] = False  # get() would otherwise default it to True
        return super().request(*args, **kwargs)


def redirect_error(
    response: requests.Response, *, where: str, setting: str, ref: str | None = None
) -> LaunchError | None:
    """For a 3xx answer, the (final) error naming where it pointed; None for any other answer.
    Redirects are never followed: requests would resend the token (or a login's secret) to
    whatever host, scheme or port the answer names."""
    if not 300 <= response.status_code < 400:
        return None
    return redirected(
        response.status_code,
        response.headers.get("Location"),
        base=response.url or "",
        where=where,
        setting=setting,
        ref=ref,
    )


def ca_bundle(environ: Mapping[str, str], variables: Iterable[str]) -> bool | str:
    """requests' `verify`: the CA file named by the first of `variables` set, else True (the
    system store). A named file that does not exist is a configuration error now."""
    for variable in variables:
        path = environ.get(variable)
        if path:
            # Read like the config first: requests would block on a FIFO or load a huge file.
            check_credential_file(path, variable)
            return path
    return True


def transport_error(
    error: requests.RequestException,
    *,
    where: str,
    ca_variable: str,
    timeout: float,
    check: str,
    ref: str | None = None,
) -> LaunchError:
    """Our error for an exchange with `where` that failed below HTTP: retried if the connection
    failed or broke, final if TLS settings or the request itself are wrong."""
    if isinstance(error, requests.exceptions.SSLError):
        return tls_error(error, where=where, ca_variable=ca_variable, check=check, ref=ref)
    if isinstance(
        error,
        requests.exceptions.ConnectionError
        | requests.exceptions.Timeout
        | requests.exceptions.ChunkedEncodingError,  # the connection broke inside the answer
    ):
        return unreachable(error, where=where, timeout=timeout, ref=ref)
    return BackendFailed(f"request to {where} failed ({type(error).__name__})", ref=ref)
