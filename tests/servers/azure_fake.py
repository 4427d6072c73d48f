"""Fakes of Azure AD (OpenID discovery, client-credentials token) and Key Vault secrets (API 7.4),
refusing what the real services refuse, with their status codes and error bodies."""

from __future__ import annotations

import base64
import binascii
import datetime
import itertools
import re
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self
from urllib.parse import parse_qs, unquote

import jwt
from cryptography.hazmat.primitives import hashes

from tests.servers.tls import (
    ClientCertificate,
    FakeServer,
    Fault,
    Request,
    Response,
    ServerCertificate,
)

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
CLIENT_ID = "fad7d5b3-69d6-4b48-9259-8d12124e1cf1"
DEFAULT_VAULT = "kmsvault"
SCOPE = "https://vault.azure.net/.default"
RESOURCE = "https://vault.azure.net"
API_VERSIONS = frozenset({"2016-10-01", "7.0", "7.1", "7.2", "7.3", "7.4", "7.5"})
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
_SECRET_NAME = re.compile(r"[0-9a-zA-Z-]{1,127}")
_TOKEN_LIFETIME = 3599


@dataclass
class Secret:
    versions: list[tuple[str, str]] = field(default_factory=list)  # (version, value), oldest first
    created: dict[str, int] = field(default_factory=dict)  # version -> creation, epoch seconds


class AzureFake:
    """One tenant with one application registration, and any number of vaults behind one URL:
    `{vault.url}/secrets/...` is the default vault, `{vault.url}/<vault>/secrets/...` any other."""

    def __init__(
        self,
        certificate: ServerCertificate,
        ca_path: Path,
        client_certificate: ClientCertificate | None = None,
    ) -> None:
        self.ca_path = ca_path
        self.tenant = TENANT
        self.client_id = CLIENT_ID
        self.client_secret = "Xq8~" + secrets.token_urlsafe(24)
        self.client_certificate = client_certificate
        self.federated_tokens: set[str] = set()
        self.secrets: dict[tuple[str, str], Secret] = {}
        self.denied: set[tuple[str, str]] = set()
        self.tokens: dict[str, float] = {}  # access token -> expiry (monotonic)
        # The one scope a token may be asked for: the public cloud's vaults, unless a test plays
        # a sovereign cloud (https://vault.usgovcloudapi.net/.default, ...).
        self.scope = SCOPE
        self.reject_tokens = False  # the vault refuses every token, as one for another tenant
        self.echo_secrets = False  # error bodies quote the secret or credential they concern
        # When set, a proxy in front of Azure AD answers token requests with this status and an
        # HTML page quoting the request body (credential included), as misconfigured ones do.
        self.proxy_page: int | None = None
        self.lock = threading.Lock()
        self.authority = AuthorityServer(self, certificate)
        self.vault = VaultServer(self, certificate)

    def put(self, name: str, value: str, vault: str = DEFAULT_VAULT) -> str:
        """Store a new version of a secret; return the version id."""
        version = uuid.uuid4().hex
        with self.lock:
            secret = self.secrets.setdefault((vault, name.lower()), Secret())
            secret.versions.append((version, value))
            secret.created[version] = int(time.time())
        return version

    def deny(self, name: str, vault: str = DEFAULT_VAULT) -> None:
        """The application has no 'get' permission on this secret (403 Forbidden)."""
        self.denied.add((vault, name.lower()))

    def environ(self) -> dict[str, str]:
        """What a deployment sets: tenant, application, secret, hosts, and the CA to trust."""
        return {
            "AZURE_TENANT_ID": self.tenant,
            "AZURE_CLIENT_ID": self.client_id,
            "AZURE_CLIENT_SECRET": self.client_secret,
            "AZURE_AUTHORITY_HOST": self.authority.url,
            "AZURE_KEYVAULT_URL": self.vault.url,
            "REQUESTS_CA_BUNDLE": str(self.ca_path),
        }

    def issued_tokens(self) -> list[str]:
        with self.lock:
            return list(self.tokens)

    def start(self) -> Self:
        self.authority.start()
        self.vault.start()
        return self

    def stop(self) -> None:
        self.authority.stop()
        self.vault.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- Azure AD -----------------------------------------------------------------------------------


def aad_error(status: int, error: str, code: int, description: str) -> Response:
    """The error body Azure AD sends: OAuth2 `error`, an AADSTS description, `error_codes`."""
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    trace, correlation = uuid.uuid4(), uuid.uuid4()
    return Response.json(
        status,
        {
            "error": error,
            "error_description": f"AADSTS{code}: {description} Trace ID: {trace} "
            f"Correlation ID: {correlation} Timestamp: {now}",
            "error_codes": [code],
            "timestamp": now,
            "trace_id": str(trace),
            "correlation_id": str(correlation),
            "error_uri": f"https://login.microsoftonline.com/error?code={code}",
        },
    )


class AuthorityServer(FakeServer):
    """login.microsoftonline.com: `/{tenant}/v2.0/.well-known/openid-configuration` and
    `/{tenant}/oauth2/v2.0/token` (client credentials only)."""

    def __init__(self, azure: AzureFake, certificate: ServerCertificate) -> None:
        super().__init__("127.0.0.1", certificate)
        self.azure = azure

    def endpoint(self, request: Request) -> str:
        if request.path.endswith("/v2.0/.well-known/openid-configuration"):
            return "discovery"
        if request.path.endswith("/oauth2/v2.0/token"):
            return "token"
        return "other"

    def fault_response(self, endpoint: str, fault: Fault) -> Response:
        response = (
            aad_error(fault.status, "temporarily_unavailable", 50196, "The server is throttling.")
            if fault.status == 429
            else aad_error(
                fault.status, "temporarily_unavailable", 90033, "A transient error has occurred."
            )
        )
        if fault.retry_after is not None:
            response.headers["Retry-After"] = fault.retry_after
        return response

    def respond(self, endpoint: str, request: Request) -> Response:
        tenant = request.path.strip("/").split("/")[0]
        if endpoint == "other":
            return Response.text(404, "Not Found")
        if tenant != self.azure.tenant:
            return aad_error(
                400,
                "invalid_tenant" if endpoint == "discovery" else "invalid_request",
                90002,
                f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID"
                " and are signing into the correct cloud.",
            )
        if endpoint == "discovery":
            if request.method != "GET":
                return Response.text(405, "Method Not Allowed")
            return Response.json(200, self._openid_configuration(request))
        if request.method != "POST":
            return aad_error(
                400, "invalid_request", 900561, "The endpoint only accepts POST requests."
            )
        if self.azure.proxy_page is not None:
            page = f"<html><body>Request rejected: {request.body.decode()}</body></html>"
            return Response(self.azure.proxy_page, page.encode(), {"Content-Type": "text/html"})
        return self._token(request)

    def _openid_configuration(self, request: Request) -> dict[str, Any]:
        # Under the name it was asked by, as Azure AD answers for each cloud's own host.
        host = request.headers.get("Host")
        base = f"https://{host}/{self.azure.tenant}" if host else f"{self.url}/{self.azure.tenant}"
        return {
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "token_endpoint_auth_methods_supported": [
                "client_secret_post",
                "private_key_jwt",
                "client_secret_basic",
            ],
            "jwks_uri": f"{base}/discovery/v2.0/keys",
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": f"{base}/v2.0",
            "request_uri_parameter_supported": False,
            "userinfo_endpoint": "https://graph.microsoft.com/oidc/userinfo",
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
            "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
            "tenant_region_scope": "EU",
            "cloud_instance_name": "microsoftonline.com",
            "cloud_graph_host_name": "graph.windows.net",
            "msgraph_host": "graph.microsoft.com",
        }

    def _token(self, request: Request) -> Response:
        content_type = request.headers.get("Content-Type", "")
        if not content_type.startswith("application/x-www-form-urlencoded"):
            return aad_error(
                400,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'grant_type'.",
            )
        form = {k: v[0] for k, v in parse_qs(request.body.decode(), keep_blank_values=True).items()}
        for required in ("grant_type", "client_id"):
            if not form.get(required):
                return _missing(required)
        if form["grant_type"] != "client_credentials":
            return aad_error(
                400,
                "unsupported_grant_type",
                70003,
                "The app requested an unsupported grant type.",
            )
        if form["client_id"] != self.azure.client_id:
            return aad_error(
                400,
                "unauthorized_client",
                700016,
                f"Application with identifier '{form['client_id']}' was not found in the"
                f" directory '{self.azure.tenant}'.",
            )
        refused = self._authenticate(form, request)
        if refused is not None:
            return refused
        if not form.get("scope"):
            return _missing("scope")
        if form["scope"].split() != [self.azure.scope]:
            return aad_error(
                400,
                "invalid_scope",
                1002012,
                f"The provided value for scope {form['scope']} is not valid. Client credential"
                " flows must have a scope value with /.default suffixed to the resource identifier"
                " (application ID URI).",
            )
        token = "eyJ0eXAiOiJKV1Qi." + secrets.token_urlsafe(32)
        with self.azure.lock:
            self.azure.tokens[token] = time.monotonic() + _TOKEN_LIFETIME
        return Response.json(
            200,
            {
                "token_type": "Bearer",
                "expires_in": _TOKEN_LIFETIME,
                "ext_expires_in": _TOKEN_LIFETIME,
                "access_token": token,
            },
        )

    def _authenticate(self, form: dict[str, str], request: Request) -> Response | None:
        """None if the client proved who it is, else Azure AD's refusal."""
        secret = form.get("client_secret") or _basic_secret(request)
        if secret is not None:
            if secret == self.azure.client_secret:
                return None
            echo = f" Received: '{secret}'." if self.azure.echo_secrets else ""
            return aad_error(
                401,
                "invalid_client",
                7000215,
                "Invalid client secret provided. Ensure the secret being sent in the request is"
                f" the client secret value, not the client secret ID, for a secret added to app"
                f" '{self.azure.client_id}'.{echo}",
            )
        assertion = form.get("client_assertion")
        if not assertion:
            return aad_error(
                401,
                "invalid_client",
                7000218,
                "The request body must contain the following parameter: 'client_assertion' or"
                " 'client_secret'.",
            )
        if form.get("client_assertion_type") != JWT_BEARER:
            return aad_error(
                400,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'client_assertion_type'.",
            )
        if assertion in self.azure.federated_tokens:
            return None
        try:
            signed_by_certificate = {"x5t", "x5t#S256"} & set(jwt.get_unverified_header(assertion))
        except jwt.DecodeError:
            signed_by_certificate = set()
        if self.azure.client_certificate is None or not signed_by_certificate:
            # Not a certificate assertion: a federated token from an issuer nobody trusts.
            return aad_error(
                400,
                "invalid_request",
                70021,
                "No matching federated identity record found for presented assertion.",
            )
        return self._check_certificate_assertion(assertion, self.azure.client_certificate)

    def _check_certificate_assertion(
        self, assertion: str, certificate: ClientCertificate
    ) -> Response | None:
        try:
            header = jwt.get_unverified_header(assertion)
        except jwt.DecodeError:
            return aad_error(401, "invalid_client", 50027, "JWT token is invalid or malformed.")
        registered = {
            "x5t#S256": certificate.thumbprint(hashes.SHA256()),
            "x5t": certificate.thumbprint(hashes.SHA1()),
        }
        # msal pads the base64url thumbprint, JWS says unpadded: Azure AD takes both.
        if not any(
            str(header.get(name, "")).rstrip("=") == value for name, value in registered.items()
        ):
            return aad_error(
                401,
                "invalid_client",
                700027,
                "The certificate with identifier used to sign the client assertion is not"
                " registered on application.",
            )
        try:
            claims = jwt.decode(
                assertion,
                certificate.certificate.public_key(),  # type: ignore[arg-type]
                algorithms=["PS256", "RS256"],
                audience=f"{self.url}/{self.azure.tenant}/oauth2/v2.0/token",
                issuer=self.azure.client_id,
                options={"require": ["exp", "aud", "iss", "sub", "jti"]},
            )
        except jwt.ExpiredSignatureError:
            return aad_error(
                401,
                "invalid_client",
                700024,
                "Client assertion is not within its valid time range.",
            )
        except jwt.InvalidTokenError:
            return aad_error(
                401, "invalid_client", 700027, "Client assertion failed signature validation."
            )
        if claims.get("sub") != self.azure.client_id:
            return aad_error(
                401,
                "invalid_client",
                700021,
                "Client assertion application identifier doesn't match.",
            )
        return None


def _missing(parameter: str) -> Response:
    return aad_error(
        400,
        "invalid_request",
        900144,
        f"The request body must contain the following parameter: '{parameter}'.",
    )


def _basic_secret(request: Request) -> str | None:
    header = request.headers.get("Authorization", "")
    if not header.startswith("Basic "):
        return None
    try:
        _, _, secret = base64.b64decode(header[6:]).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return unquote(secret.replace("+", " "))


# -- Key Vault ----------------------------------------------------------------------------------


def vault_error(status: int, code: str, message: str, inner: str | None = None) -> Response:
    error: dict[str, Any] = {"code": code, "message": message}
    if inner:
        error["innererror"] = {"code": inner}
    return Response.json(status, {"error": error})


class VaultServer(FakeServer):
    """`GET /secrets/{name}[/{version}]?api-version=7.4` with `Authorization: Bearer <token>`."""

    def __init__(self, azure: AzureFake, certificate: ServerCertificate) -> None:
        super().__init__("127.0.0.1", certificate)
        self.azure = azure

    def endpoint(self, request: Request) -> str:
        return "secret" if "secrets" in request.path.strip("/").split("/")[:2] else "other"

    def fault_response(self, endpoint: str, fault: Fault) -> Response:
        if fault.status == 429:
            response = vault_error(
                429,
                "Throttled",
                "Request was not processed because too many requests were received.",
            )
        else:
            response = vault_error(
                fault.status, "ServiceUnavailable", "The service is unavailable."
            )
        if fault.retry_after is not None:
            response.headers["Retry-After"] = fault.retry_after
        return response

    def respond(self, endpoint: str, request: Request) -> Response:
        refused = self._authorize(request)
        if refused is not None:
            return refused
        versions = request.query.get("api-version")
        if not versions or not versions[0]:
            return vault_error(
                400,
                "BadParameter",
                "The request URI contains an invalid or missing api-version parameter.",
            )
        if versions[0] not in API_VERSIONS:
            return vault_error(
                400,
                "BadParameter",
                f"The specified version ({versions[0]}) is not recognized. Consider using the"
                " latest supported version (7.5).",
            )
        parts = request.path.strip("/").split("/")
        vault = DEFAULT_VAULT if parts[0] == "secrets" else parts.pop(0)
        if endpoint != "secret" or not 2 <= len(parts) <= 3:
            return vault_error(404, "NotFound", "The requested resource was not found.")
        if request.method != "GET":
            return vault_error(405, "BadParameter", f"Method {request.method} is not allowed.")
        name, version = parts[1], (parts[2] if len(parts) == 3 else "")
        if not _SECRET_NAME.fullmatch(name):
            return vault_error(
                400, "BadParameter", f"The request URI contains an invalid name: {name}"
            )
        return self._secret(vault, name, version)

    def _authorize(self, request: Request) -> Response | None:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme != "Bearer" or not token:
            message = "AKV10000: Request is missing a Bearer or PoP token."
        else:
            with self.azure.lock:
                expiry = self.azure.tokens.get(token)
            if expiry is not None and expiry > time.monotonic() and not self.azure.reject_tokens:
                return None
            message = "AKV10032: Invalid issuer. Expected one of the tenant's issuers."
        challenge = (
            f'Bearer authorization="https://login.microsoftonline.com/{self.azure.tenant}",'
            f' resource="{RESOURCE}"'
        )
        response = vault_error(401, "Unauthorized", message)
        response.headers["WWW-Authenticate"] = challenge
        return response

    def _secret(self, vault: str, name: str, version: str) -> Response:
        key = (vault, name.lower())
        with self.azure.lock:
            stored = self.azure.secrets.get(key)
            versions = list(stored.versions) if stored else []
            created = dict(stored.created) if stored else {}
        found = [v for v in versions if v[0] == version] if version else versions[-1:]
        if key in self.azure.denied:
            echo = f" Secret value: {found[0][1]}" if self.azure.echo_secrets and found else ""
            return vault_error(
                403,
                "Forbidden",
                f"The user, group or application 'appid={self.azure.client_id}' does not have"
                f" secrets get permission on key vault '{vault}'.{echo}",
                inner="AccessDenied",
            )
        if not found:
            shown = f"{name}/{version}" if version else name
            return vault_error(
                404,
                "SecretNotFound",
                f"A secret with (name/id) {shown} was not found in this key vault. If you recently"
                " deleted this secret you may be able to recover it using the correct recovery"
                " command.",
            )
        found_version, value = found[0]
        now = created[found_version]  # a version's attributes never change: stable, like Azure's
        return Response.json(
            200,
            {
                "value": value,
                "id": f"https://{vault}.vault.azure.net/secrets/{name}/{found_version}",
                "attributes": {
                    "enabled": True,
                    "created": now,
                    "updated": now,
                    "recoveryLevel": "Recoverable+Purgeable",
                    "recoverableDays": 90,
                },
                "tags": {},
            },
        )


class AzureStore:
    """The shared backend contract's store: secrets in the fake's default vault."""

    backend = "azure-kv"

    def __init__(self, fake: AzureFake) -> None:
        self.fake = fake
        self._names = itertools.count()

    def put(self, value: str) -> str:
        name = f"contract-{next(self._names)}"
        self.fake.put(name, value)
        return f"secret://{DEFAULT_VAULT}/secrets/{name}"

    def missing(self) -> str:
        return f"secret://{DEFAULT_VAULT}/secrets/does-not-exist"

    def environ(self) -> dict[str, str]:
        return self.fake.environ()


# -- managed identity endpoints ------------------------------------------------------------------

MI_CLIENT_ID = "6d3a7b1e-2f4c-4f8e-9a51-0c2b9d7e8f10"  # a user-assigned identity's client ID
APP_SERVICE_API = "2019-08-01"
IMDS_API = "2018-02-01"
MACHINE_LEARNING_API = "2017-09-01"


class ManagedIdentityServer(FakeServer):
    """The platform's local token endpoint, over plain HTTP on loopback as on Azure, in one of
    two dialects (what msal's managed_identity.py speaks, and the services document):
    - "app-service": GET {IDENTITY_ENDPOINT}?api-version=2019-08-01&resource=..[&client_id=..]
      with the `X-IDENTITY-HEADER` secret; answers `expires_on` (App Service, Functions,
      Container Apps);
    - "imds": GET /metadata/identity/oauth2/token?api-version=2018-02-01&resource=..
      [&client_id=..] with `Metadata: true` and no `X-Forwarded-For`; answers `expires_in`
      (the VM's instance metadata service at 169.254.169.254, here on loopback);
    - "machine-learning": GET {MSI_ENDPOINT}?api-version=2017-09-01&resource=..[&clientid=..]
      with the `secret` header (MSI_SECRET); answers `expires_on` (Azure Machine Learning).
    Tokens go into the AzureFake's store, so Key Vault accepts them. System-assigned and the
    user-assigned MI_CLIENT_ID exist unless a test removes them."""

    def __init__(self, azure: AzureFake, dialect: str) -> None:
        super().__init__("127.0.0.1")
        self.azure = azure
        self.dialect = dialect
        self.identity_header = "mi-header-" + secrets.token_urlsafe(16)
        self.system_assigned = True
        self.user_assigned = {MI_CLIENT_ID}
        self.requests: list[Request] = []

    @property
    def endpoint_url(self) -> str:
        """IDENTITY_ENDPOINT (App Service), MSI_ENDPOINT (Machine Learning), or
        AZURE_POD_IDENTITY_AUTHORITY_HOST (IMDS)."""
        return self.url if self.dialect == "imds" else f"{self.url}/msi/token"

    def environ(self) -> dict[str, str]:
        """What the platform sets for the process, plus the CA and vault URL of the fake."""
        base = {
            "AZURE_KEYVAULT_URL": self.azure.vault.url,
            "REQUESTS_CA_BUNDLE": str(self.azure.ca_path),
        }
        if self.dialect == "app-service":
            return {
                **base,
                "IDENTITY_ENDPOINT": self.endpoint_url,
                "IDENTITY_HEADER": self.identity_header,
            }
        if self.dialect == "machine-learning":
            return {
                **base,
                "MSI_ENDPOINT": self.endpoint_url,
                "MSI_SECRET": self.identity_header,
            }
        return {**base, "AZURE_POD_IDENTITY_AUTHORITY_HOST": self.endpoint_url}

    def endpoint(self, request: Request) -> str:
        path = "/metadata/identity/oauth2/token" if self.dialect == "imds" else "/msi/token"
        return "token" if request.path == path else "other"

    def respond(self, endpoint: str, request: Request) -> Response:
        with self.azure.lock:
            self.requests.append(request)
        if endpoint != "token" or request.method != "GET":
            return Response.text(404, "Not Found")
        query = {k: v[0] for k, v in request.query.items()}
        if self.dialect == "app-service":
            return self._app_service(request, query)
        if self.dialect == "machine-learning":
            return self._machine_learning(request, query)
        return self._imds(request, query)

    def _machine_learning(self, request: Request, query: dict[str, str]) -> Response:
        def error(status: int, message: str) -> Response:
            return Response.json(status, {"statusCode": status, "message": message})

        if request.headers.get("secret") != self.identity_header:
            return error(401, "Unauthorized: the secret header is missing or wrong.")
        if query.get("api-version") != MACHINE_LEARNING_API:
            return error(400, "api-version is missing or not supported.")
        refused = self._identity_refused(query.get("clientid"))
        if refused:
            return error(400, refused)
        if query.get("resource", "").rstrip("/") != RESOURCE:
            return error(400, "The resource is not valid.")
        return Response.json(
            200,
            {
                "access_token": self._issue(),
                "expires_on": str(int(time.time()) + _TOKEN_LIFETIME),
                "resource": RESOURCE,
                "token_type": "Bearer",
            },
        )

    def _app_service(self, request: Request, query: dict[str, str]) -> Response:
        def error(status: int, message: str) -> Response:
            return Response.json(status, {"statusCode": status, "message": message})

        if request.headers.get("X-IDENTITY-HEADER") != self.identity_header:
            return error(401, "Unauthorized: the X-IDENTITY-HEADER is missing or wrong.")
        if query.get("api-version") != APP_SERVICE_API:
            return error(400, "api-version is missing or not supported.")
        refused = self._identity_refused(query.get("client_id"))
        if refused:
            return error(400, refused)
        if query.get("resource", "").rstrip("/") != RESOURCE:
            return error(500, "An unexpected error occured while fetching the AAD Token.")
        token = self._issue()
        return Response.json(
            200,
            {
                "access_token": token,
                "expires_on": str(int(time.time()) + _TOKEN_LIFETIME),
                "resource": RESOURCE,
                "token_type": "Bearer",
                "client_id": query.get("client_id") or "system-assigned",
            },
        )

    def _imds(self, request: Request, query: dict[str, str]) -> Response:
        def error(status: int, code: str, description: str) -> Response:
            return Response.json(status, {"error": code, "error_description": description})

        if request.headers.get("Metadata") != "true":
            return error(400, "invalid_request", "Required metadata header not specified")
        if request.headers.get("X-Forwarded-For") is not None:
            return error(400, "invalid_request", "Request contains X-Forwarded-For header")
        if query.get("api-version") != IMDS_API:
            return error(400, "invalid_request", "Invalid api-version")
        refused = self._identity_refused(query.get("client_id"))
        if refused:
            return error(400, "invalid_request", "Identity not found")
        if query.get("resource", "").rstrip("/") != RESOURCE:
            return error(400, "invalid_resource", "AADSTS500011: The resource was not found.")
        now = int(time.time())
        return Response.json(
            200,
            {
                "access_token": self._issue(),
                "client_id": query.get("client_id") or "system-assigned",
                "expires_in": str(_TOKEN_LIFETIME),
                "expires_on": str(now + _TOKEN_LIFETIME),
                "ext_expires_in": str(_TOKEN_LIFETIME),
                "not_before": str(now),
                "resource": RESOURCE,
                "token_type": "Bearer",
            },
        )

    def _identity_refused(self, client_id: str | None) -> str | None:
        if client_id is None:
            return None if self.system_assigned else "No managed identity assigned."
        if client_id in self.user_assigned:
            return None
        return "No managed identity found for specified ClientId/ResourceId/PrincipalId."

    def _issue(self) -> str:
        token = "eyJ0eXAiOiJKV1Qi.mi." + secrets.token_urlsafe(32)
        with self.azure.lock:
            self.azure.tokens[token] = time.monotonic() + _TOKEN_LIFETIME
        return token
