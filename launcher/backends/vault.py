"""The `vault` backend: KV version 2 secrets from HashiCorp Vault or OpenBao, one read per path."""

from __future__ import annotations

import copy
import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import datetime
from typing import Any, ClassVar

import hvac
import requests
import urllib3
from hvac.utils import format_url

from launcher.backends import Backend, Secret, reject_port
from launcher.backends._http import Session, header_value, redirect_error, transport_error
from launcher.backends._transport import fits_in_header, retry_after
from launcher.deadline import ATTEMPT_TIMEOUT, MIN_ATTEMPT, concurrently, retry, window
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
from launcher.files import check_credential_file, read_credential
from launcher.refs import Ref

DEFAULT_ADDR = "http://127.0.0.1:8200"
DEFAULT_FIELD = "value"
APPROLE_LOGIN = "/v1/auth/approle/login"
REVOKE_SELF = "/v1/auth/token/revoke-self"
# VAULT_AUTH_METHOD: the vault CLI's `login -method` names (also Vault Agent's auto_auth types).
AUTH_METHODS = ("token", "approle", "jwt", "kubernetes")
# Where Kubernetes projects the pod's service-account token: Vault Agent's default token_path.
SERVICE_ACCOUNT_JWT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount/token"
# What an HTTP header carries unchanged: visible ASCII. Anything else (a '€', a control character,
# a newline that would start another header) cannot be a Vault token or namespace.
# An auth mount path: Vault's path segments, no empty, '.' or '..' segment.
_MOUNT = re.compile(r"(?!.*(?:^|/)\.{1,2}(?:/|$))[A-Za-z0-9_.-]+(?:/[A-Za-z0-9_.-]+)*")
# Vault answers these while sealed, standby, overloaded or not yet consistent (412, 472, 473).
_TRANSIENT = {412, 429, 472, 473}
# Go's strconv.ParseBool, which is how the vault CLI reads VAULT_SKIP_VERIFY.
_TRUE = {"1", "t", "T", "true", "TRUE", "True"}
_FALSE = {"0", "f", "F", "false", "FALSE", "False"}
_JSON_TYPES = {dict: "object", list: "array", bool: "boolean", int: "number", float: "number"}

KvPath = tuple[str, str, int | None]  # (mount, path, pinned version): the unit of one read
_PIN = re.compile(r"[1-9][0-9]{0,17}")  # KV-v2 versions count from 1; 0 would mean "latest"
_RFC3339 = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|z|[+-]\d\d:\d\d)")
log = logging.getLogger("kms-launch")


class VaultBackend(Backend):
    """secret://<mount>/<path>[?version=<N>][#<field>] is field <field> (default `value`) of a
    KV-v2 secret, its latest version or version N."""

    name: ClassVar[str] = "vault"
    _mint: _Login | None = None  # the login that will mint this run's token, if any
    _minted = False  # whether the client holds a token this run minted (and must revoke)

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
        if ref.version is not None and not _PIN.fullmatch(ref.version):
            raise BadReference(
                f"?version={ref.version} is not a KV version 2 version (1, 2, 3, ...)",
                ref=ref.text,
            )

    def fetch(self, refs: Sequence[Ref]) -> Mapping[Ref, Secret]:
        wanted: dict[KvPath, list[Ref]] = {}
        for ref in refs:
            pin = None if ref.version is None else int(ref.version)
            wanted.setdefault((ref.host, "/".join(ref.path), pin), []).append(ref)
        try:
            client = self._login(self._client())
        except LaunchError as error:  # backend-wide: no credentials, login refused
            raise Failures([error]) from None

        def read(secret: KvPath) -> _Read | LaunchError:
            try:
                return self._read(client, secret)
            except LaunchError as error:
                return error

        reads, _ = concurrently(read, list(wanted))
        self._revoke(client)  # every read is done: a minted token has served its purpose
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
                    values[ref] = Secret(_field(data.data, ref, data.where), *data.version)
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
        for variable in ("VAULT_CACERT", "VAULT_CLIENT_CERT", "VAULT_CLIENT_KEY"):
            path = self.environ.get(variable)
            if path:  # read like the config first: requests would block on a FIFO
                check_credential_file(path, variable)
        cert: tuple[str, str] | str | None = self.environ.get("VAULT_CLIENT_CERT") or None
        key = self.environ.get("VAULT_CLIENT_KEY")
        if isinstance(cert, str) and key:  # without a key file, the cert file holds both
            cert = (cert, key)
        token, self._mint = self._credentials()
        namespace = self.environ.get("VAULT_NAMESPACE") or None
        if namespace is not None:
            header_value("VAULT_NAMESPACE", namespace)
        client = hvac.Client(
            url=self.address,
            token=token or "",  # "" rather than None: None makes hvac look in os.environ
            cert=cert,
            verify=verify,
            timeout=ATTEMPT_TIMEOUT,
            namespace=namespace,
            # Ours, not hvac's: pooled for the concurrent reads, and it never follows a
            # redirect (hvac's would, resending X-Vault-Token or a login's secret_id).
            session=Session(verify),
        )
        return client

    def _credentials(self) -> tuple[str | None, _Login | None]:
        """The token to use, or the login that will mint one. VAULT_AUTH_METHOD picks one
        method; unset, the first found wins: VAULT_TOKEN, AppRole, ~/.vault-token (explicit
        AppRole settings beat a token file a human may have left behind)."""
        method = self.environ.get("VAULT_AUTH_METHOD", "")
        if method and method not in AUTH_METHODS:
            raise NotConfigured(
                f"VAULT_AUTH_METHOD={method!r} is not one of: {', '.join(AUTH_METHODS)}"
            )
        if method in ("jwt", "kubernetes"):
            return None, self._jwt_login(method)
        if method == "approle":
            approle = self._approle()
            if approle is None:
                raise NotConfigured(
                    "VAULT_AUTH_METHOD=approle needs VAULT_ROLE_ID and VAULT_SECRET_ID (or"
                    " vault-role-id and vault-secret-id in $CREDENTIALS_DIRECTORY)"
                )
            return None, approle
        token = self.credential("VAULT_TOKEN")
        if token is not None:
            return header_value("VAULT_TOKEN", token), None
        approle = None if method == "token" else self._approle()
        if approle is not None:
            return None, approle
        token = self._token_file()
        if token is not None:
            return token, None
        raise NotConfigured(
            "no Vault credentials: set VAULT_TOKEN, or VAULT_ROLE_ID and VAULT_SECRET_ID"
            " for AppRole (or vault-token / vault-role-id + vault-secret-id in"
            " $CREDENTIALS_DIRECTORY), or VAULT_AUTH_METHOD=jwt or kubernetes"
        )

    def _approle(self) -> _Login | None:
        role_id = self.credential("VAULT_ROLE_ID")
        secret_id = self.credential("VAULT_SECRET_ID")
        if not (role_id and secret_id):
            return None
        return _Login(
            APPROLE_LOGIN,
            "AppRole login",
            "VAULT_ROLE_ID and VAULT_SECRET_ID",
            {"role_id": role_id, "secret_id": secret_id},
        )

    def _jwt_login(self, method: str) -> _Login:
        """JWT or Kubernetes auth: the token in VAULT_JWT_FILE (default: the pod's projected
        service-account token), the role in VAULT_AUTH_ROLE, the mount in VAULT_AUTH_MOUNT
        (default: the method's name), as Vault Agent's `role`, `token_path` and `mount_path`."""
        mount = self.environ.get("VAULT_AUTH_MOUNT", "").strip("/") or method
        mount = mount.removeprefix("auth/")  # Agent writes mount_path = "auth/kubernetes"
        if not _MOUNT.fullmatch(mount):
            raise NotConfigured(f"VAULT_AUTH_MOUNT={mount!r} is not an auth mount path")
        role = self.environ.get("VAULT_AUTH_ROLE", "")
        if not role and method == "kubernetes":
            raise NotConfigured("VAULT_AUTH_METHOD=kubernetes needs VAULT_AUTH_ROLE")
        path = self.environ.get("VAULT_JWT_FILE") or SERVICE_ACCOUNT_JWT_PATH
        jwt = read_credential(path, "VAULT_JWT_FILE")
        if jwt is None:
            raise NotConfigured(f"VAULT_JWT_FILE ({path}): no such file, or empty")
        body = {"jwt": jwt}
        if role:  # else the JWT method's default_role
            body["role"] = role
        name = "Kubernetes" if method == "kubernetes" else "JWT"
        return _Login(
            f"/v1/auth/{mount}/login",  # checked against _MOUNT: nothing to escape
            f"{name} login at auth/{mount}",
            "VAULT_AUTH_ROLE, VAULT_AUTH_MOUNT and the token in VAULT_JWT_FILE",
            body,
        )

    def _token_file(self) -> str | None:
        """~/.vault-token, as the vault CLI leaves it: read like every credential file."""
        home = self.environ.get("HOME")
        if not home:
            return None
        path = os.path.join(home, ".vault-token")
        token = read_credential(path, "the Vault token file")
        if token is None:
            return None
        try:
            return header_value("the Vault token file", token)
        except NotConfigured:
            raise NotConfigured(
                f"the Vault token file ({path}) holds characters an HTTP header cannot carry"
            ) from None

    def _login(self, client: hvac.Client) -> hvac.Client:
        """Without a token, trade the login's credentials for one, kept in memory only and
        revoked once the secrets are read (see _revoke)."""
        login = self._mint
        if client.token or login is None:
            return client
        answer = self._request(client, "post", login.url, login.what, login=login, json=login.body)
        auth = answer.get("auth")
        token = auth.get("client_token") if isinstance(auth, dict) else None
        if not isinstance(token, str) or not token:
            raise AccessDenied(f"{login.what} returned no token")
        if not fits_in_header(token):
            raise BackendFailed(f"{login.what} returned a token no HTTP header can carry")
        client.token = token
        self._minted = True
        return client

    def _revoke(self, client: hvac.Client) -> None:
        """Revoke the token this run minted, before exec: no copy of it outlives the launch.
        Best effort within what is left of the deadline: the secrets are already read, and an
        unrevoked token only lives in this process, which exec replaces; it expires with its
        TTL. Never a failure of the run, always a warning."""
        if not self._minted:
            return
        self._minted = False
        timeout = min(ATTEMPT_TIMEOUT, self.deadline.remaining())
        reason: str | None = None
        if timeout < MIN_ATTEMPT:
            reason = "no time left before the deadline"
        else:
            try:
                with window(timeout):
                    answer = client.adapter.request(
                        "post", REVOKE_SELF, raise_exception=False, timeout=timeout
                    )
            except (requests.RequestException, OSError) as error:
                reason = type(error).__name__
            else:
                status = answer.status_code if isinstance(answer, requests.Response) else 200
                if status not in (200, 204):
                    reason = f"HTTP {status}"
        if reason is not None:
            log.warning(
                "could not revoke the Vault token this run obtained (%s): it stays valid until"
                " its TTL ends",
                reason,
            )

    def _read(self, client: hvac.Client, secret: KvPath) -> _Read:
        mount, path, pin = secret
        where = f"{mount}/{path}" + ("" if pin is None else f" version {pin}")
        url = format_url("/v1/{}/data/{}", mount, path)
        if pin is not None:
            url += f"?version={pin}"  # digits only (checked): nothing to escape
        answer = self._request(client, "get", url, where)
        body = answer.get("data")
        if not isinstance(body, dict):
            raise BackendFailed(f"Vault's answer for {where} is not a KV version 2 read")
        data = body.get("data")
        if data is None:  # that version (or the latest) is deleted or destroyed
            if pin is None:
                raise SecretNotFound(f"{where} has no current version (deleted or destroyed)")
            raise SecretNotFound(f"{where} is deleted or destroyed")
        if not isinstance(data, dict):
            raise BadSecretValue(f"{where} is not a KV version 2 secret")
        return _Read(data, where, _metadata(body.get("metadata"), where, pin))

    def _request(
        self,
        client: hvac.Client,
        method: str,
        url: str,
        what: str,
        *,
        login: _Login | None = None,  # a login's refusal names the login's variables
        **kwargs: Any,
    ) -> dict[str, Any]:
        """One Vault call, retried while the failure is transient, within the deadline."""

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
            except requests.exceptions.JSONDecodeError:  # hvac parses every 200 answer
                raise BackendFailed(
                    f"Vault answered {what} with a body that is not JSON: is VAULT_ADDR a"
                    " Vault server?"
                ) from None
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
            if isinstance(answer, requests.Response):
                raise redirect_error(
                    answer, where=f"Vault at {self.address}", setting="VAULT_ADDR"
                ) or _status_error(answer, what, login)
            raise BackendFailed(f"Vault answered {what} with JSON that is not an object")

        return retry(self.deadline, attempt)


def _status_error(response: requests.Response, what: str, login: _Login | None) -> LaunchError:
    """The error for a non-200 answer. Never its body: Vault may echo what it was sent."""
    status = response.status_code
    if login and status in (400, 401, 403):
        return AccessDenied(f"{login.what} refused (HTTP {status}): check {login.hint}")
    if status in (401, 403):
        return AccessDenied(
            f"permission denied reading {what} (HTTP {status}): check the token and its policy"
        )
    if status == 404:
        if login:
            return NotConfigured(f"{login.what}: no such auth method (HTTP 404)")
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


@dataclass(frozen=True)
class _Login:
    """A login that mints a token: where to POST, what to call it, what to check if refused."""

    url: str
    what: str  # "AppRole login", "JWT login at auth/jwt"
    hint: str  # the variables to check when Vault refuses it
    body: dict[str, str] = dataclass_field(repr=False)  # credentials: never in a repr


@dataclass(frozen=True)
class _Read:
    """One KV-v2 read: the secret's fields and which version they are."""

    data: Mapping[str, Any] = dataclass_field(repr=False)  # values: never in a repr
    where: str
    version: tuple[str | None, float | None]  # (metadata.version, metadata.created_time)


def _metadata(metadata: Any, where: str, pin: int | None) -> tuple[str | None, float | None]:
    """(version, created) from a KV-v2 answer's metadata; a pinned read must be that version."""
    if not isinstance(metadata, dict):
        return None, None
    version = metadata.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        return None, _created(metadata.get("created_time"))
    if pin is not None and version != pin:
        raise BackendFailed(f"Vault answered version {version} when asked for {where}")
    return str(version), _created(metadata.get("created_time"))


def _created(stamp: Any) -> float | None:
    """Epoch seconds of an RFC 3339 time as Vault writes it (nanoseconds, 'Z')."""
    if not isinstance(stamp, str):
        return None
    match = _RFC3339.fullmatch(stamp)
    if match is None:
        return None
    seconds, fraction, zone = match.groups()
    try:
        moment = datetime.fromisoformat(seconds + ("+00:00" if zone in "Zz" else zone))
    except ValueError:
        return None
    # Microseconds at most: a float holds no more, and datetime takes no more.
    return moment.timestamp() + float(f"0.{(fraction or '0')[:6]}")


def _field(data: Mapping[str, Any], ref: Ref, where: str) -> bytes:
    field = ref.field or DEFAULT_FIELD
    if field not in data:
        raise SecretNotFound(f"{where} has no field {field!r}", ref=ref.text)
    value = data[field]
    if not isinstance(value, str):
        kind = "null" if value is None else _JSON_TYPES.get(type(value), type(value).__name__)
        raise BadSecretValue(
            f"field {field!r} of {where} is a JSON {kind}, not a string", ref=ref.text
        )
    return value.encode("utf-8")
