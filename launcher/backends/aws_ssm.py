"""The `aws-ssm` backend: SSM Parameter Store parameters, decrypted, ten names per GetParameters."""

from __future__ import annotations

import copy
import re
import threading
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import boto3
import botocore.exceptions
from botocore.config import Config

from launcher.backends import Backend, Secret, reject_field, reject_port
from launcher.backends._transport import retry_after, tls_error, unreachable
from launcher.errors import (
    AccessDenied,
    BackendFailed,
    BackendUnavailable,
    BadReference,
    BadSecretValue,
    Failures,
    LaunchError,
    NotConfigured,
    SecretNotFound,
)
from launcher.refs import Ref
from launcher.resolve import CONCURRENCY, Deadline, concurrently, retry

BATCH = 10  # GetParameters' limit: 11 names is a ValidationException
_REGION = re.compile(r"[a-z]{2,}(-[a-z0-9]+)+-[0-9]+")  # eu-west-1, us-gov-west-1, eusc-de-east-1
# AWS's parameter-name alphabet; `name:version` / `name:label` selectors come as %3A.
_NAME = re.compile(r"(/[A-Za-z0-9_.-]+)+(:[A-Za-z0-9_.-]+)?")
_MAX_NAME = 2048
_MAX_DEPTH = 15
_DENIED = {
    "AccessDenied",
    "AccessDeniedException",
    "ExpiredToken",
    "ExpiredTokenException",
    "IncompleteSignature",
    "InvalidClientTokenId",
    "InvalidSignatureException",
    "MissingAuthenticationToken",
    "SignatureDoesNotMatch",
    "UnrecognizedClientException",
}
_TRANSIENT = {
    "InternalFailure",
    "InternalServerError",
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
_NO_CREDENTIALS = (
    "no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or put"
    " aws-access-key-id and aws-secret-access-key in $CREDENTIALS_DIRECTORY), AWS_PROFILE,"
    " or run with an instance, task or pod role"
)

Batch = tuple[str, tuple[str, ...]]  # (region, parameter names): one GetParameters call


class SsmBackend(Backend):
    """secret://<region>/<name> is parameter /<name> in <region>, SecureStrings decrypted."""

    name: ClassVar[str] = "aws-ssm"

    def __init__(self, environ: Mapping[str, str], deadline: Deadline) -> None:
        super().__init__(environ, deadline)
        self._clients: dict[tuple[str, float], Any] = {}  # by region and attempt timeout
        self._lock = threading.Lock()  # boto3 sessions are not thread-safe; clients are

    def check(self, ref: Ref) -> None:
        reject_field(ref)
        reject_port(ref)
        if not ref.path:
            raise BadReference("expected secret://<region>/<name>", ref=ref.text)
        if not _REGION.fullmatch(ref.host):
            raise BadReference(
                f"{ref.host!r} is not an AWS region; expected secret://<region>/<name>",
                ref=ref.text,
            )
        # Checked here, not left to AWS: one bad name fails its whole batch of ten.
        name = _parameter(ref)
        if not _NAME.fullmatch(name) or len(name) > _MAX_NAME or name.count("/") > _MAX_DEPTH:
            raise BadReference(
                "not an SSM parameter name: up to 15 levels of letters, digits and '_.-',"
                " optionally ending in %3A<version or label>",
                ref=ref.text,
            )

    def fetch(self, refs: Sequence[Ref]) -> Mapping[Ref, Secret]:
        wanted: dict[tuple[str, str], list[Ref]] = {}
        for ref in refs:
            wanted.setdefault((ref.host, _parameter(ref)), []).append(ref)
        try:
            session = self._open_session()
        except LaunchError as error:  # backend-wide: no credentials, unknown profile
            raise Failures([error]) from None

        def call(batch: Batch) -> dict[str, bytes | LaunchError]:
            try:
                return self._get_parameters(session, batch)
            except LaunchError as error:
                return dict.fromkeys(batch[1], error)

        outcomes, _ = concurrently(call, _batches(wanted))
        found = {
            (region, name): outcome
            for (region, _names), answers in outcomes.items()
            for name, outcome in answers.items()
        }
        values: dict[Ref, Secret] = {}
        failures: list[LaunchError] = []
        for key, key_refs in wanted.items():
            outcome = found[key]
            for ref in key_refs:
                if isinstance(outcome, bytes):
                    values[ref] = Secret(outcome)
                else:
                    failure = copy.copy(outcome)  # one report line per reference
                    failure.ref = ref.text
                    failures.append(failure)
        if failures:
            raise Failures(failures, resolved=values)
        return values

    def _open_session(self) -> boto3.Session:
        """A session on botocore's default credential chain, except that keys found in our
        environment or in $CREDENTIALS_DIRECTORY are passed explicitly. Endpoint
        (AWS_ENDPOINT_URL_SSM, AWS_ENDPOINT_URL), CA bundle (AWS_CA_BUNDLE) and the rest of the
        chain botocore reads from the process environment: it takes no mapping to read from."""
        access_key = self.credential("AWS_ACCESS_KEY_ID")
        secret_key = self.credential("AWS_SECRET_ACCESS_KEY")
        if bool(access_key) != bool(secret_key):
            missing = "AWS_SECRET_ACCESS_KEY" if access_key else "AWS_ACCESS_KEY_ID"
            raise NotConfigured(f"{missing} is missing: AWS keys come in pairs")
        try:
            session = boto3.Session(
                aws_access_key_id=access_key,
                aws_secret_access_key=secret_key,
                aws_session_token=self.credential("AWS_SESSION_TOKEN") if access_key else None,
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
        ) as error:
            raise NotConfigured(f"AWS configuration is unusable ({type(error).__name__})") from None
        except botocore.exceptions.BotoCoreError as error:
            # E.g. a container or SSO credential provider that failed; its message may quote
            # what the provider answered.
            raise BackendUnavailable(
                f"cannot obtain AWS credentials ({type(error).__name__})"
            ) from None
        if credentials is None:
            raise NotConfigured(_NO_CREDENTIALS)
        return session

    def _client(self, session: boto3.Session, region: str, timeout: float) -> Any:
        """An SSM client whose connect and read timeouts are this attempt's. Clients differ only
        near the deadline, and a further client of a session costs ~2 ms (measured)."""
        key = (region, max(0.1, round(timeout, 1)))
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                client = session.client(
                    "ssm",
                    region_name=region,
                    config=Config(
                        connect_timeout=key[1],
                        read_timeout=key[1],
                        # The shared retry, not botocore's: botocore counts attempts and knows
                        # no deadline. Measured against a silent endpoint with 5 s timeouts:
                        # standard mode fails after 15.0 s, legacy (the default) after 30.4 s,
                        # whatever --timeout says; against constant throttling standard mode
                        # gives up after 3 calls in 1.6 s with most of the deadline left.
                        retries={"total_max_attempts": 1},
                        max_pool_connections=CONCURRENCY,
                    ),
                )
                self._clients[key] = client
        return client

    def _get_parameters(
        self, session: boto3.Session, batch: Batch
    ) -> dict[str, bytes | LaunchError]:
        region, names = batch

        def attempt(timeout: float) -> dict[str, Any]:
            try:
                answer: dict[str, Any] = self._client(session, region, timeout).get_parameters(
                    Names=list(names), WithDecryption=True
                )
                return answer
            except botocore.exceptions.ClientError as error:
                raise _client_error(error, region) from None
            except botocore.exceptions.SSLError as error:
                raise tls_error(
                    error,
                    where=f"SSM in {region}",
                    ca_variable="AWS_CA_BUNDLE",
                    check="AWS_CA_BUNDLE and the endpoint",
                ) from None
            except (
                botocore.exceptions.ConnectionError,
                botocore.exceptions.HTTPClientError,
            ) as error:
                raise unreachable(error, where=f"SSM in {region}", timeout=timeout) from None
            except botocore.exceptions.NoCredentialsError:
                raise NotConfigured(_NO_CREDENTIALS) from None
            except botocore.exceptions.BotoCoreError as error:
                raise BackendFailed(
                    f"SSM call in {region} failed ({type(error).__name__})"
                ) from None

        answer = retry(self.deadline, attempt)
        results: dict[str, bytes | LaunchError] = {}
        # A batch never holds two names with the same base, so the base identifies the request
        # even for `name:label` (moto leaves out the `Selector` AWS sends back).
        by_base = {name.split(":", 1)[0]: name for name in names}
        for parameter in answer.get("Parameters", []):
            name = by_base.get(parameter.get("Name", ""))
            value = parameter.get("Value")
            if name is None:
                continue
            if isinstance(value, str):
                results[name] = value.encode("utf-8")
            else:
                results[name] = BadSecretValue(f"SSM returned no value for {name} in {region}")
        for name in names:
            if name not in results:
                results[name] = SecretNotFound(f"no parameter {name} in {region}")
        return results


def _parameter(ref: Ref) -> str:
    return "/" + "/".join(ref.path)


def _batches(wanted: Mapping[tuple[str, str], object]) -> list[Batch]:
    """Names in calls of ten per region, no two with the same base name in one call (so that
    `/db` and `/db:2` can be told apart in the answer)."""
    open_batches: dict[str, list[list[str]]] = {}
    for region, name in wanted:
        base = name.split(":", 1)[0]
        batches = open_batches.setdefault(region, [])
        for batch in batches:
            if len(batch) < BATCH and all(other.split(":", 1)[0] != base for other in batch):
                batch.append(name)
                break
        else:
            batches.append([name])
    return [(region, tuple(batch)) for region, batches in open_batches.items() for batch in batches]


def _client_error(error: botocore.exceptions.ClientError, region: str) -> LaunchError:
    """The error for an AWS error answer, by its code only: the message is the service's."""
    code = str(error.response.get("Error", {}).get("Code", ""))
    metadata = error.response.get("ResponseMetadata", {})
    status = int(metadata.get("HTTPStatusCode", 0) or 0)
    if code in _DENIED:
        return AccessDenied(f"SSM in {region} refused the credentials or the permission ({code})")
    if code in _TRANSIENT or status == 429 or status >= 500:
        return BackendUnavailable(
            f"SSM in {region} answered {code or status}",
            retry_after=retry_after(metadata.get("HTTPHeaders", {}).get("retry-after")),
        )
    if code == "InvalidKeyId":
        return BadSecretValue(f"SSM in {region} cannot decrypt with the parameter's key ({code})")
    if code == "ValidationException":
        return BadReference(f"SSM in {region} rejected the parameter names ({code})")
    return BackendFailed(f"SSM in {region} answered {code or status}")
