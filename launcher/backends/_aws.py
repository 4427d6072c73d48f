"""What the AWS backends share: files and endpoints checked, the session, clients, error classes."""

from __future__ import annotations

import copy
import json
import os
import re
import threading
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any, ClassVar, TypeVar
from urllib.parse import urlsplit

import boto3
import botocore.exceptions
from botocore.config import Config

from launcher.backends import Backend, Secret, reject_port
from launcher.backends._transport import (
    fits_in_header,
    redirected,
    retry_after,
    tls_error,
    unreachable,
)
from launcher.deadline import CONCURRENCY, Deadline, retry
from launcher.errors import (
    AccessDenied,
    BackendFailed,
    BackendUnavailable,
    BadReference,
    Failures,
    LaunchError,
    NotConfigured,
)
from launcher.files import check_credential_file, read_credential
from launcher.refs import Ref

K = TypeVar("K", bound=Hashable)
REGION = re.compile(r"[a-z]{2,}(-[a-z0-9]+)+-[0-9]+")  # eu-west-1, us-gov-west-1, eusc-de-east-1
# Codes of a request whose credentials AWS did not accept at all.
_REFUSED = {
    "ExpiredToken",
    "ExpiredTokenException",
    "IncompleteSignature",
    "InvalidClientTokenId",
    "InvalidSignatureException",
    "MissingAuthenticationToken",
    "SignatureDoesNotMatch",
    "UnrecognizedClientException",
}
_NOT_ALLOWED = {"AccessDenied", "AccessDeniedException"}  # good credentials, no permission
_TRANSIENT = {
    "InternalFailure",
    "InternalServerError",
    "InternalServiceError",
    "PriorRequestNotComplete",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "RequestThrottled",
    "RequestTimeout",
    "RequestTimeoutException",
    "ServiceUnavailable",
    "ThrottledException",
    "Throttling",
    "ThrottlingException",
    "TooManyRequestsException",
}
NO_CREDENTIALS = (
    "no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or put"
    " aws-access-key-id and aws-secret-access-key in $CREDENTIALS_DIRECTORY), AWS_PROFILE,"
    " or run with an instance, task or pod role"
)
# What an HTTP header (SigV4's Authorization, X-Amz-Security-Token) can carry; anything else
# makes http.client raise an encoding error deep inside botocore.

# An error code the service answered -> our error, given "<service> in <region>" and the code.
Codes = Mapping[str, Callable[[str, str], LaunchError]]

# What botocore's response parsers raise on a hostile answer (measured: `[]`, `null`, a list
# where a structure belongs, a bad timestamp, bytes that are not UTF-8): plain Python errors,
# not BotoCoreError. They are classified only when raised after parsing began (see _parsing).
_MALFORMED = (AttributeError, TypeError, ValueError, KeyError, IndexError, RuntimeError)
_parsing = threading.local()  # .status: the HTTP status of the answer being parsed, or None


def _parsing_begins(operation_model: Any, response_dict: Mapping[str, Any], **_: Any) -> None:
    """botocore's before-parse hook: from here on an exception is about the answer. A success
    whose body is not a JSON object is refused here, since botocore's JSON parser reads an HTML
    page or a truncated body as an empty answer: "no such parameter" instead of the truth."""
    status = response_dict.get("status_code")
    _parsing.status = status
    if operation_model.service_model.protocol != "json" or not isinstance(status, int):
        return
    if 200 <= status < 300 and not isinstance(json.loads(response_dict.get("body") or b""), dict):
        raise ValueError("not a JSON object")  # JSONDecodeError, UnicodeDecodeError likewise


class PermissionDenied(AccessDenied):
    """AccessDenied(Exception): the credentials were accepted, a policy does not allow the call.
    Told apart from refused credentials so a backend can fall back to another operation."""


class AwsBackend(Backend):
    """An AWS service reached with boto3 on botocore's credential chain, one client per region and
    attempt timeout, every failure classified."""

    service: ClassVar[str]  # botocore's service name: "ssm"
    label: ClassVar[str]  # for messages: "SSM"
    endpoint_variable: ClassVar[str]  # the service's own endpoint variable
    codes: ClassVar[Codes] = {}  # the service's error codes beyond the shared ones

    def __init__(self, environ: Mapping[str, str], deadline: Deadline) -> None:
        super().__init__(environ, deadline)
        self._clients: dict[tuple[str, float], Any] = {}  # by region and attempt timeout
        self._lock = threading.Lock()  # boto3 sessions are not thread-safe; clients are

    def check_region(self, ref: Ref, form: str) -> None:
        """A first component that is an AWS region; `form` shows the reference's shape."""
        reject_port(ref)
        if not ref.path:
            raise BadReference(f"expected {form}", ref=ref.text)
        if not REGION.fullmatch(ref.host):
            raise BadReference(f"{ref.host!r} is not an AWS region; expected {form}", ref=ref.text)

    def _open_session(self) -> boto3.Session:
        """A session on botocore's default credential chain, except that keys found in our
        environment or in $CREDENTIALS_DIRECTORY are passed explicitly. Endpoint, CA bundle and
        the rest of the chain botocore reads from the process environment (it takes no mapping),
        so the files and URLs among them are checked here first: botocore would block on a FIFO,
        read a huge file whole, or fail with an unclassified ValueError."""
        access_key = self._key("AWS_ACCESS_KEY_ID")
        secret_key = self._key("AWS_SECRET_ACCESS_KEY")
        if bool(access_key) != bool(secret_key):
            missing = "AWS_SECRET_ACCESS_KEY" if access_key else "AWS_ACCESS_KEY_ID"
            raise NotConfigured(f"{missing} is missing: AWS keys come in pairs")
        self._check_files(keys_given=bool(access_key))
        self._check_endpoints()
        try:
            session = boto3.Session(
                aws_access_key_id=access_key,
                aws_secret_access_key=secret_key,
                aws_session_token=self._key("AWS_SESSION_TOKEN") if access_key else None,
                profile_name=self.environ.get("AWS_PROFILE") or None,
            )
            credentials = session.get_credentials()
        except botocore.exceptions.ProfileNotFound:
            raise NotConfigured(
                f"AWS profile {self.environ.get('AWS_PROFILE')!r} not found"
            ) from None
        except (
            botocore.exceptions.PartialCredentialsError,
            botocore.exceptions.InvalidConfigError,
            botocore.exceptions.ConfigParseError,
            botocore.exceptions.ConfigNotFound,
        ) as error:
            raise NotConfigured(f"AWS configuration is unusable ({type(error).__name__})") from None
        except botocore.exceptions.BotoCoreError as error:
            # E.g. a container or SSO credential provider that failed; its message may quote
            # what the provider answered.
            raise BackendUnavailable(
                f"cannot obtain AWS credentials ({type(error).__name__})"
            ) from None
        if credentials is None:
            raise NotConfigured(NO_CREDENTIALS)
        return session

    def _key(self, variable: str) -> str | None:
        """A credential (environment, else $CREDENTIALS_DIRECTORY) that a header can carry."""
        value = self.credential(variable)
        if value is not None and not fits_in_header(value):
            raise NotConfigured(
                f"{variable} holds a character an HTTP header cannot carry (not printable ASCII)"
            )
        return value

    def _check_files(self, *, keys_given: bool) -> None:
        """The files botocore will read, each non-blocking, regular and capped (78 naming its
        variable). The config and shared credentials files are optional, as for botocore; a file
        a variable names for TLS or web identity must be there."""
        home = self.environ.get("HOME") or os.path.expanduser("~")
        for variable, default in (
            ("AWS_CONFIG_FILE", "config"),
            ("AWS_SHARED_CREDENTIALS_FILE", "credentials"),
        ):
            named = self.environ.get(variable)
            path = os.path.expanduser(named) if named else os.path.join(home, ".aws", default)
            read_credential(path, variable if named else f"the AWS {default} file")
        bundle = self.environ.get("AWS_CA_BUNDLE")
        if bundle:
            check_credential_file(bundle, "AWS_CA_BUNDLE")
        token_file = self.environ.get("AWS_WEB_IDENTITY_TOKEN_FILE")
        if token_file and not keys_given:  # with keys given, botocore never reads it
            check_credential_file(token_file, "AWS_WEB_IDENTITY_TOKEN_FILE")

    def _endpoint_setting(self) -> str:
        """The variable that chose the endpoint (botocore's order), for a report to name."""
        for variable in (self.endpoint_variable, "AWS_ENDPOINT_URL"):
            if self.environ.get(variable):
                return variable
        return self.endpoint_variable

    def _check_endpoints(self) -> None:
        """AWS_ENDPOINT_URL and the service's own variable, if botocore will use them, must be
        http(s) URLs with a host and a valid port: 78 naming the variable, never botocore's
        ValueError (70)."""
        if self.environ.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "").lower() == "true":
            return
        # STS's: the web-identity credential provider calls it before any request of ours.
        for variable in (self.endpoint_variable, "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_STS"):
            url = self.environ.get(variable)
            if not url:
                continue
            try:
                parts = urlsplit(url)
                parts.port  # noqa: B018 -- raises ValueError for a port out of range or not a number
            except ValueError:
                raise NotConfigured(f"{variable} is not a valid URL") from None
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise NotConfigured(f"{variable} must be an http:// or https:// URL with a host")

    def _client(self, session: boto3.Session, region: str, timeout: float) -> Any:
        """A client whose connect and read timeouts are this attempt's. Clients differ only
        near the deadline, and a further client of a session costs ~2 ms (measured)."""
        key = (region, max(0.1, round(timeout, 1)))
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                try:
                    client = session.client(
                        self.service,
                        region_name=region,
                        config=Config(
                            connect_timeout=key[1],
                            read_timeout=key[1],
                            # The shared retry, not botocore's: botocore counts attempts and
                            # knows no deadline. Measured against a silent endpoint with 5 s
                            # timeouts: standard mode fails after 15.0 s, legacy (the default)
                            # after 30.4 s, whatever --timeout says; against constant
                            # throttling standard mode gives up after 3 calls in 1.6 s with
                            # most of the deadline left.
                            retries={"total_max_attempts": 1},
                            max_pool_connections=CONCURRENCY,
                        ),
                    )
                except (ValueError, botocore.exceptions.BotoCoreError) as error:
                    # An endpoint or setting from the AWS config file that botocore rejects.
                    raise NotConfigured(
                        f"cannot set up the {self.label} client for {region}: check the AWS"
                        f" config file and AWS_* variables ({type(error).__name__})"
                    ) from None
                client.meta.events.register("before-parse", _parsing_begins)
                self._clients[key] = client
        return client

    def _call(
        self,
        session: boto3.Session,
        region: str,
        operation: str,
        codes: Codes | None = None,
        **parameters: Any,
    ) -> dict[str, Any]:
        """One API call, retried within the deadline while it fails transiently; any failure
        is a LaunchError. `codes` classifies error codes particular to this call."""
        where = f"{self.label} in {region}"
        known = {**self.codes, **(codes or {})}

        def attempt(timeout: float) -> dict[str, Any]:
            _parsing.status = None
            try:
                answer: dict[str, Any] = getattr(self._client(session, region, timeout), operation)(
                    **parameters
                )
                return answer
            except botocore.exceptions.ClientError as error:
                metadata = error.response.get("ResponseMetadata", {})
                code = int(metadata.get("HTTPStatusCode", 0) or 0)
                if 300 <= code < 400:  # botocore follows no redirect: say where it pointed
                    raise redirected(
                        code,
                        metadata.get("HTTPHeaders", {}).get("location"),
                        base=self.environ.get(self._endpoint_setting(), ""),
                        where=where,
                        setting=self._endpoint_setting(),
                    ) from None
                raise classify(
                    str(error.response.get("Error", {}).get("Code", "")),
                    int(metadata.get("HTTPStatusCode", 0) or 0),
                    where,
                    known,
                    metadata.get("HTTPHeaders", {}).get("retry-after"),
                ) from None
            except botocore.exceptions.SSLError as error:
                raise tls_error(
                    error,
                    where=where,
                    ca_variable="AWS_CA_BUNDLE",
                    check="AWS_CA_BUNDLE and the endpoint",
                ) from None
            except (
                botocore.exceptions.ConnectionError,
                botocore.exceptions.HTTPClientError,
            ) as error:
                raise unreachable(error, where=where, timeout=timeout) from None
            except botocore.exceptions.NoCredentialsError:
                raise NotConfigured(NO_CREDENTIALS) from None
            except botocore.exceptions.BotoCoreError as error:
                # A malformed answer (ResponseParserError), a credential provider that failed
                # mid-call: the class name only, since messages quote what the peer sent.
                raise BackendFailed(f"{where}: the call failed ({type(error).__name__})") from None
            except _MALFORMED as error:
                status = getattr(_parsing, "status", None)
                if status is None:  # not the answer: a bug, reported as one
                    raise
                what = f"{where} answered HTTP {status} with a body that is not {self.label}'s"
                if status == 429 or status >= 500:  # an error page of a proxy or load balancer
                    raise BackendUnavailable(what) from None
                raise BackendFailed(f"{what} ({type(error).__name__})") from None

        return retry(self.deadline, attempt)


def deliver_each(
    wanted: Mapping[K, Sequence[Ref]], deliver: Callable[[K, Ref], Secret]
) -> dict[Ref, Secret]:
    """deliver(key, ref) for every reference of every key fetched, or Failures with one line per
    reference that failed (the same error for a key read by several references is copied)."""
    values: dict[Ref, Secret] = {}
    failures: list[LaunchError] = []
    for key, key_refs in wanted.items():
        for ref in key_refs:
            try:
                values[ref] = deliver(key, ref)
            except LaunchError as error:
                failure = copy.copy(error)
                failure.ref = ref.text
                failures.append(failure)
    if failures:
        raise Failures(failures, resolved=values)
    return values


def classify(
    code: str, status: int, where: str, codes: Codes, retry_after_header: str | None = None
) -> LaunchError:
    """The error for an AWS error answer, by its code and status only: the message is the
    service's and may quote anything."""
    if code in codes:
        return codes[code](where, code)
    if code in _NOT_ALLOWED:
        return PermissionDenied(f"{where} refused the permission ({code})")
    if code in _REFUSED:
        return AccessDenied(f"{where} refused the credentials ({code})")
    if status in (401, 403):  # no AWS error code (botocore then names the status): a proxy's page
        return AccessDenied(f"{where} answered HTTP {status}: access refused")
    if code in _TRANSIENT or status == 429 or status >= 500:
        return BackendUnavailable(
            f"{where} answered {code or status}", retry_after=retry_after(retry_after_header)
        )
    return BackendFailed(f"{where} answered {code or status}")
