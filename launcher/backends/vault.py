"""The `vault` backend: KV version 2 secrets from HashiCorp Vault or OpenBao, one read per path."""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import hvac
import requests
import urllib3
from hvac.utils import format_url

from launcher.backends import Backend, Secret, reject_port
from launcher.backends._http import pooled, transport_error
from launcher.backends._transport import retry_after
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
from launcher.resolve import ATTEMPT_TIMEOUT, concurrently, retry

DEFAULT_ADDR = "http://127.0.0.1:8200"
DEFAULT_FIELD = "value"
APPROLE_LOGIN = "/v1/auth/approle/login"
# Vault answers these while sealed, standby, overloaded or not yet consistent (412, 472, 473).
_TRANSIENT = {412, 429, 472, 473}
# Go's strconv.ParseBool, which is how the vault CLI reads VAULT_SKIP_VERIFY.
_TRUE = {"1", "t", "T", "true", "TRUE", "True"}
_FALSE = {"0", "f", "F", "false", "FALSE", "False"}
_JSON_TYPES = {dict: "object", list: "array", bool: "boolean", int: "number", float: "number"}

KvPath = tuple[str, str]  # (mount, path): the unit of one read
log = logging.getLogger("kms-launch")


class VaultBackend(Backend):
    """secret://<mount>/<path>[#<field>] is field <field> (default `value`) of a KV-v2 secret."""

    name: ClassVar[str] = "vault"

    def check(self, ref: Ref) -> None:
        reject_port(ref)
        if not ref.path:
            raise BadReference("expected secret://<mount>/<path>[#<field>]", ref=ref.text)
        for segment in ref.segments:
            # A %2F inside a segment is a real '/', so look at the pieces Vault will see;
            # '.' and '..' would be normalised away by the HTTP client and read another path.
            if any(piece in ("", ".", "..") for piece in segment.split("/")):
                raise BadReference(
                    "mount and path segments may not be empty, '.' or '..'", ref=ref.text
                )

    def fetch(self, refs: Sequence[Ref]) -> Mapping[Ref, Secret]:
        wanted: dict[KvPath, list[Ref]] = {}
        for ref in refs:
            wanted.setdefault((ref.host, "/".join(ref.path)), []).append(ref)
        try:
            client = self._login(self._client())
        except LaunchError as error:  # backend-wide: no credentials, login refused
            raise Failures([error]) from None

        def read(secret: KvPath) -> dict[str, Any] | LaunchError:
            try:
                return self._read(client, secret)
            except LaunchError as error:
                return error

        reads, _ = concurrently(read, list(wanted))
        values: dict[Ref, Secret] = {}
        failures: list[LaunchError] = []
        for secret, secret_refs in wanted.items():
            data = reads[secret]
            for ref in secret_refs:
                if isinstance(data, LaunchError):
                    failure = copy.copy(data)  # one report line per reference that needed it
                    failure.ref = ref.text
                    failures.append(failure)
                    continue
                try:
                    values[ref] = Secret(_field(data, ref, secret))
                except LaunchError as error:
                    failures.append(error)
        if failures:
            raise Failures(failures, resolved=values)
        return values

    @property
    def address(self) -> str:
        return self.environ.get("VAULT_ADDR") or DEFAULT_ADDR

    def _client(self) -> hvac.Client:
        """An hvac client configured from our environment only: hvac would otherwise read
        os.environ and the process's ~/.vault-token behind our back."""
        verify: bool | str = True
        skip = self.environ.get("VAULT_SKIP_VERIFY", "")
        if skip in _TRUE:
            verify = False
            # One line of ours instead of urllib3's multi-line warning from every thread.
            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
            log.warning("VAULT_SKIP_VERIFY: the certificate of %s is not verified", self.address)
        elif skip and skip not in _FALSE:
            raise NotConfigured(f"VAULT_SKIP_VERIFY={skip!r} is not a boolean")
        else:
            # Passed per request by hvac, so REQUESTS_CA_BUNDLE & co. cannot override it
            # (requests lets them override only a session-level or `True` verify).
            verify = self.environ.get("VAULT_CACERT") or self.environ.get("VAULT_CAPATH") or True
        cert: tuple[str, str] | str | None = self.environ.get("VAULT_CLIENT_CERT") or None
        key = self.environ.get("VAULT_CLIENT_KEY")
        if isinstance(cert, str) and key:  # without a key file, the cert file holds both
            cert = (cert, key)
        token = self.credential("VAULT_TOKEN")
        if token is None and not self._approle():
            # Explicit AppRole settings beat a token file a human may have left behind.
            token = self._token_file()
        if token is None and not self._approle():
            raise NotConfigured(
                "no Vault credentials: set VAULT_TOKEN, or VAULT_ROLE_ID and VAULT_SECRET_ID"
                " for AppRole (or vault-token / vault-role-id + vault-secret-id in"
                " $CREDENTIALS_DIRECTORY)"
            )
        client = hvac.Client(
            url=self.address,
            token=token or "",  # "" rather than None: None makes hvac look in os.environ
            cert=cert,
            verify=verify,
            timeout=ATTEMPT_TIMEOUT,
            namespace=self.environ.get("VAULT_NAMESPACE") or None,
        )
        pooled(client.session)  # reads run on CONCURRENCY threads
        return client

    def _approle(self) -> tuple[str, str] | None:
        role_id = self.credential("VAULT_ROLE_ID")
        secret_id = self.credential("VAULT_SECRET_ID")
        return (role_id, secret_id) if role_id and secret_id else None

    def _token_file(self) -> str | None:
        home = self.environ.get("HOME")
        if not home:
            return None
        path = os.path.join(home, ".vault-token")
        try:
            with open(path, encoding="utf-8") as file:
                return file.read().strip() or None
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as error:
            raise NotConfigured(f"cannot read {path}: {type(error).__name__}") from None

    def _login(self, client: hvac.Client) -> hvac.Client:
        """With AppRole credentials and no token, trade them for a token kept in memory only."""
        approle = self._approle()
        if client.token or approle is None:
            return client
        role_id, secret_id = approle
        answer = self._request(
            client,
            "post",
            APPROLE_LOGIN,
            "AppRole login",
            json={"role_id": role_id, "secret_id": secret_id},
        )
        token = (answer.get("auth") or {}).get("client_token")
        if not isinstance(token, str) or not token:
            raise AccessDenied("AppRole login returned no token")
        client.token = token
        return client

    def _read(self, client: hvac.Client, secret: KvPath) -> dict[str, Any]:
        mount, path = secret
        where = f"{mount}/{path}"
        answer = self._request(client, "get", format_url("/v1/{}/data/{}", mount, path), where)
        data = (answer.get("data") or {}).get("data")
        if data is None:  # a deleted or destroyed latest version
            raise SecretNotFound(f"{where} has no current version (deleted or destroyed)")
        if not isinstance(data, dict):
            raise BadSecretValue(f"{where} is not a KV version 2 secret")
        return data

    def _request(
        self, client: hvac.Client, method: str, url: str, what: str, **kwargs: Any
    ) -> dict[str, Any]:
        """One Vault call, retried while the failure is transient, within the deadline."""
        login = url == APPROLE_LOGIN

        def attempt(timeout: float) -> dict[str, Any]:
            try:
                answer = client.adapter.request(
                    method, url, raise_exception=False, timeout=timeout, **kwargs
                )
            except (
                requests.exceptions.MissingSchema,
                requests.exceptions.InvalidSchema,
                requests.exceptions.InvalidURL,
            ):
                raise NotConfigured(f"VAULT_ADDR={self.address!r} is not an http(s) URL") from None
            except requests.exceptions.RequestException as error:
                raise transport_error(
                    error,
                    where=f"Vault at {self.address}",
                    ca_variable="VAULT_CACERT",
                    timeout=timeout,
                    check="VAULT_ADDR, VAULT_CACERT, VAULT_CLIENT_CERT and VAULT_CLIENT_KEY",
                ) from None
            except OSError as error:  # requests' check that the CA and client cert files exist
                raise NotConfigured(
                    f"cannot use the TLS files of VAULT_CACERT / VAULT_CLIENT_CERT /"
                    f" VAULT_CLIENT_KEY: {error}"
                ) from None
            if isinstance(answer, dict):  # hvac's JSONAdapter parses a 200 answer
                return answer
            raise _status_error(answer, what, login)

        return retry(self.deadline, attempt)


def _status_error(response: requests.Response, what: str, login: bool) -> LaunchError:
    """The error for a non-200 answer. Never its body: Vault may echo what it was sent."""
    status = response.status_code
    if login and status in (400, 401, 403):
        return AccessDenied(
            f"AppRole login refused (HTTP {status}): check VAULT_ROLE_ID and VAULT_SECRET_ID"
        )
    if status in (401, 403):
        return AccessDenied(
            f"permission denied reading {what} (HTTP {status}): check the token and its policy"
        )
    if status == 404:
        if login:
            return NotConfigured("no AppRole auth method at auth/approle (HTTP 404)")
        return SecretNotFound(f"no secret at {what}")
    if status in _TRANSIENT or status >= 500:
        return BackendUnavailable(
            f"Vault answered HTTP {status} ({what})"
            + (": sealed, standby or overloaded" if status == 503 else ""),
            retry_after=retry_after(response.headers.get("Retry-After")),
        )
    if status == 200:
        return BackendFailed(f"Vault answered {what} with a body that is not JSON")
    return BackendFailed(f"Vault answered HTTP {status} ({what})")


def _field(data: Mapping[str, Any], ref: Ref, secret: KvPath) -> bytes:
    field = ref.field or DEFAULT_FIELD
    where = "/".join(secret)
    if field not in data:
        raise SecretNotFound(f"{where} has no field {field!r}", ref=ref.text)
    value = data[field]
    if not isinstance(value, str):
        kind = "null" if value is None else _JSON_TYPES.get(type(value), type(value).__name__)
        raise BadSecretValue(
            f"field {field!r} of {where} is a JSON {kind}, not a string", ref=ref.text
        )
    return value.encode("utf-8")
