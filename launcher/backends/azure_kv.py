"""The `azure-kv` backend: Key Vault secrets (API 7.4), all read with one Azure AD token per run."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import urlsplit

import msal
import requests

from launcher.backends import Backend, Secret, reject_field, reject_port
from launcher.backends._http import (
    Session,
    ca_bundle,
    header_value,
    redirect_error,
    transport_error,
)
from launcher.backends._transport import retry_after
from launcher.deadline import Deadline, concurrently, retry
from launcher.errors import (
    AccessDenied,
    BackendFailed,
    BackendUnavailable,
    BadReference,
    Failures,
    LaunchError,
    NotConfigured,
    SecretNotFound,
)
from launcher.files import read_credential
from launcher.refs import Ref

API_VERSION = "7.4"
DEFAULT_AUTHORITY = "https://login.microsoftonline.com"
PUBLIC_VAULT_DOMAIN = "vault.azure.net"
# Sovereign clouds: the authority host decides the vaults' DNS suffix and the token's resource.
SOVEREIGN_VAULT_DOMAINS = {
    "login.microsoftonline.us": "vault.usgovcloudapi.net",
    "login.chinacloudapi.cn": "vault.azure.cn",
    "login.partner.microsoftonline.cn": "vault.azure.cn",
}
CREDENTIAL_VARIABLES = (
    "AZURE_CLIENT_SECRET",
    "AZURE_CLIENT_CERTIFICATE_PATH",
    "AZURE_FEDERATED_TOKEN_FILE",
)
# AZURE_TOKEN_CREDENTIALS, azure-identity's variable: one credential by its class name (any case),
# or `prod`, the chain kms-launch follows by default: EnvironmentCredential (secret, certificate),
# WorkloadIdentityCredential (federated token), ManagedIdentityCredential.
TOKEN_CREDENTIALS = {
    "prod": None,
    "environmentcredential": "environment",
    "workloadidentitycredential": "workload",
    "managedidentitycredential": "managed",
}
# The instance metadata service of Azure VMs; msal lets AZURE_POD_IDENTITY_AUTHORITY_HOST replace it.
IMDS_HOST = "http://169.254.169.254"
# Azure Arc's agent: where it is installed, where it answers (what msal looks for).
ARC_AGENT = "/opt/azcmagent/bin/himds"
ARC_ENDPOINT = "http://localhost:40342/metadata/identity/oauth2/token"
_VAULT_NAME = re.compile(r"(?!.*--)[A-Za-z][A-Za-z0-9-]{1,22}[A-Za-z0-9]")
_SECRET_NAME = re.compile(r"[0-9a-zA-Z-]{1,127}")
_VERSION = re.compile(r"[0-9a-zA-Z]{1,64}")
_TENANT = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]{0,253}")
_OAUTH_ERROR = re.compile(r"[a-z_]{1,64}")
_PEM_KEY = re.compile(
    r"-----BEGIN ((?:RSA |EC |ENCRYPTED )?PRIVATE KEY)-----.+?-----END \1-----", re.DOTALL
)
_PEM_CERTIFICATE = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)
# Key Vault error codes safe to repeat: fixed identifiers, unlike the messages beside them.
_VAULT_CODES = frozenset(
    {
        "BadParameter", "Forbidden", "SecretNotFound", "Unauthorized", "AccessDenied",
        "ForbiddenByRbac", "ForbiddenByPolicy", "ForbiddenByFirewall", "ForbiddenByConnection",
        "SecretDisabled",
    }
)  # fmt: skip
_HINTS = {
    7000215: "check AZURE_CLIENT_SECRET: the secret's value, not its ID",
    7000222: "the client secret has expired",
    700016: "check AZURE_CLIENT_ID and AZURE_TENANT_ID",
    90002: "check AZURE_TENANT_ID and AZURE_AUTHORITY_HOST",
    700027: "is this certificate registered on the application?",
    700024: "is this machine's clock right?",
    70021: "no federated credential of the application matches AZURE_FEDERATED_TOKEN_FILE",
}

# msal logs an answer it cannot parse verbatim, and a token endpoint may echo the credential it
# was sent: nothing of msal's may reach stderr (a NullHandler also keeps logging's lastResort out).
_msal_log = logging.getLogger("msal")
_msal_log.addHandler(logging.NullHandler())
_msal_log.propagate = False


class AzureKeyVaultBackend(Backend):
    """secret://<vault>/secrets/<name>[?version=<id>] (or .../<name>/<id>): that Key Vault
    secret's value, its current version or version <id>."""

    name: ClassVar[str] = "azure-kv"

    def __init__(self, environ: Mapping[str, str], deadline: Deadline) -> None:
        super().__init__(environ, deadline)
        self._authority_host = _authority_host(environ.get("AZURE_AUTHORITY_HOST"))
        authority_name = urlsplit(self._authority_host).hostname or ""
        vault_domain = SOVEREIGN_VAULT_DOMAINS.get(authority_name, PUBLIC_VAULT_DOMAIN)
        self._scope = f"https://{vault_domain}/.default"
        self._known_authority = authority_name in msal.authority.WELL_KNOWN_AUTHORITY_HOSTS
        self._vault_url = _vault_url(environ.get("AZURE_KEYVAULT_URL"), vault_domain)
        self._resource = f"https://{vault_domain}"  # what a managed identity's token is for
        self._managed: ManagedSource | None = None  # set when the platform's identity is used
        self._tenant, self._client_id, self._client_credential = self._identity()
        self._session = Session(ca_bundle(environ, ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")))
        self._http = _MsalHttp(self._session, deadline)
        self._app: msal.ConfidentialClientApplication | None = None
        self._managed_app: msal.ManagedIdentityClient | None = None

    def check(self, ref: Ref) -> None:
        reject_field(ref)
        reject_port(ref)
        if not 2 <= len(ref.path) <= 3 or ref.path[0] != "secrets":
            raise BadReference("expected secret://<vault>/secrets/<name>[/<version>]", ref=ref.text)
        if not _VAULT_NAME.fullmatch(ref.host):
            raise BadReference(
                f"{ref.host!r} is not a Key Vault name (3-24 letters, digits and single"
                " hyphens, starting with a letter)",
                ref=ref.text,
            )
        if not _SECRET_NAME.fullmatch(ref.path[1]):
            raise BadReference(
                f"{ref.path[1]!r} is not a Key Vault secret name (1-127 letters, digits, '-')",
                ref=ref.text,
            )
        if len(ref.path) == 3 and ref.version is not None:
            # Even when equal: one reference, one way to name its version.
            raise BadReference(
                "two versions: write ?version=<version> or /secrets/<name>/<version>, not both",
                ref=ref.text,
            )
        version = _pinned(ref)
        if version is not None and not _VERSION.fullmatch(version):
            raise BadReference(f"{version!r} is not a secret version", ref=ref.text)

    def fetch(self, refs: Sequence[Ref]) -> Mapping[Ref, Secret]:
        if not refs:
            return {}
        # One token for every reference, acquired before fanning out (not once per thread).
        try:
            token = retry(self.deadline, self._acquire_token)
        except LaunchError as error:
            raise Failures([error]) from None
        values, failures = concurrently(lambda ref: self._secret(ref, token), refs)
        if failures:
            raise Failures(failures, resolved=values)
        return values

    # -- configuration

    def _identity(self) -> tuple[str, str, str | dict[str, Any] | None]:
        """(tenant, client ID, credential) of an application registration; or, with nothing
        stored (or AZURE_TOKEN_CREDENTIALS=ManagedIdentityCredential), the platform's managed
        identity: self._managed is set and the credential is None. AZURE_CLIENT_ID then picks a
        user-assigned identity, as azure-identity's DefaultAzureCredential reads it."""
        chosen = self.environ.get("AZURE_TOKEN_CREDENTIALS", "")
        if chosen.strip().lower() not in TOKEN_CREDENTIALS and chosen.strip():
            raise NotConfigured(
                f"AZURE_TOKEN_CREDENTIALS={chosen!r} is not one kms-launch supports: prod,"
                " EnvironmentCredential, WorkloadIdentityCredential or ManagedIdentityCredential"
            )
        choice = TOKEN_CREDENTIALS.get(chosen.strip().lower())
        client_id = self.environ.get("AZURE_CLIENT_ID", "")
        credential, variable = (
            (None, "") if choice == "managed" else self._client_credential_from_env(choice)
        )
        if credential is None:
            if choice in (None, "managed"):
                self._managed = managed_source(self.environ, client_id)
                return "", client_id, None
            wanted = (
                "AZURE_CLIENT_SECRET or AZURE_CLIENT_CERTIFICATE_PATH"
                if choice == "environment"
                else "AZURE_FEDERATED_TOKEN_FILE"
            )
            raise NotConfigured(f"AZURE_TOKEN_CREDENTIALS={chosen.strip()} needs {wanted}")
        tenant = self.environ.get("AZURE_TENANT_ID", "")
        missing = [
            name for name in ("AZURE_TENANT_ID", "AZURE_CLIENT_ID") if not self.environ.get(name)
        ]
        if missing:
            raise NotConfigured(f"azure-kv needs {' and '.join(missing)} with {variable}")
        if not _TENANT.fullmatch(tenant):
            raise NotConfigured(f"AZURE_TENANT_ID={tenant!r} is not a tenant ID or domain")
        return tenant, client_id, credential

    def _client_credential_from_env(
        self, choice: str | None
    ) -> tuple[str | dict[str, Any] | None, str]:
        """The first credential set, in azure-identity's order: secret, certificate, workload
        identity (the federated token file AKS projects into the pod); and its variable.
        `choice` ("environment", "workload") limits the search to that credential."""
        if choice in (None, "environment"):
            secret = self.credential("AZURE_CLIENT_SECRET")
            if secret:
                return secret, "AZURE_CLIENT_SECRET"
            certificate_path = self.environ.get("AZURE_CLIENT_CERTIFICATE_PATH")
            if certificate_path:
                password = self.environ.get("AZURE_CLIENT_CERTIFICATE_PASSWORD") or None
                return (
                    _certificate_credential(certificate_path, password),
                    "AZURE_CLIENT_CERTIFICATE_PATH",
                )
        token_file = self.environ.get("AZURE_FEDERATED_TOKEN_FILE")
        if token_file and choice in (None, "workload"):
            assertion = FederatedToken(token_file)
            assertion()  # unreadable now is a configuration error now, not a refused token later
            return {"client_assertion": assertion}, "AZURE_FEDERATED_TOKEN_FILE"
        return None, ""

    # -- Azure AD

    def _acquire_token(self, timeout: float) -> str:
        del timeout  # each of msal's requests takes its own from the deadline (see _MsalHttp)
        if self._managed is not None:
            return self._acquire_managed_token(self._managed)
        try:
            if self._app is None:
                # Built here, inside the retry: the constructor already fetches the OpenID
                # configuration from the authority.
                self._app = msal.ConfidentialClientApplication(
                    self._client_id,
                    client_credential=self._client_credential,
                    authority=f"{self._authority_host}/{self._tenant}",
                    http_client=self._http,
                    http_cache=_NoHttpCache(),
                    instance_discovery=None if self._known_authority else False,
                )
            result = self._app.acquire_token_for_client(scopes=[self._scope])
        except requests.RequestException as error:
            raise transport_error(
                error,
                where=self._authority_host,
                ca_variable="REQUESTS_CA_BUNDLE",
                check="AZURE_AUTHORITY_HOST and REQUESTS_CA_BUNDLE",
                timeout=self._http.timeout,
            ) from None
        except LaunchError:  # the federated token file, read again by msal's assertion
            raise
        except Exception:
            # msal parses whatever the authority sends and fails on a hostile or broken answer
            # with any exception (KeyError for an OpenID document without its endpoints,
            # TypeError for JSON of the wrong shape, ValueError, MsalServiceError). Its message
            # may quote the answer: judge by what came back instead.
            raise self._token_failure(None) from None
        token = result.get("access_token") if isinstance(result, dict) else None
        if isinstance(token, str) and token:
            return token
        raise self._token_failure(result)

    def _token_failure(self, result: Any) -> LaunchError:
        response = self._http.last
        status = response.status_code if response is not None else None
        redirected = response is not None and redirect_error(
            response, where=f"Azure AD at {self._authority_host}", setting="AZURE_AUTHORITY_HOST"
        )
        if redirected:
            return redirected
        if response is not None and (response.status_code == 429 or response.status_code >= 500):
            return BackendUnavailable(
                f"Azure AD answered HTTP {response.status_code}",
                retry_after=retry_after(response.headers.get("Retry-After")),
            )
        error, codes = _oauth_error(result if isinstance(result, dict) else _json(response))
        if error == "temporarily_unavailable":
            return BackendUnavailable("Azure AD is temporarily unavailable")
        if error or codes:
            described = " ".join([error or "error", *(f"AADSTS{code}" for code in codes)])
            hints = [_HINTS[code] for code in codes if code in _HINTS]
            return AccessDenied(
                f"Azure AD refused the token request: {described}"
                + (f" ({'; '.join(hints)})" if hints else "")
            )
        if status in (401, 403):
            return AccessDenied(f"Azure AD refused the token request (HTTP {status})")
        return BackendFailed(
            f"Azure AD at {self._authority_host} gave an answer that is not OAuth2 (HTTP {status})"
        )

    def _acquire_managed_token(self, source: ManagedSource) -> str:
        """A token from the platform's managed identity endpoint, through msal's
        ManagedIdentityClient, which picks the endpoint from the process environment (the
        environment kms-launch runs with) exactly as `managed_source` described it."""
        try:
            if self._managed_app is None:
                self._managed_app = msal.ManagedIdentityClient(
                    source.identity, http_client=self._http, http_cache=_NoHttpCache()
                )
            result = self._managed_app.acquire_token_for_client(resource=self._resource)
        except requests.RequestException as error:
            raise transport_error(
                error,
                where=f"the managed identity endpoint {source.where}",
                ca_variable="REQUESTS_CA_BUNDLE",
                check=source.setting,
                timeout=self._http.timeout,
            ) from None
        except Exception:
            # A body that is not JSON (json's ValueError), msal's ManagedIdentityError (Azure Arc
            # not confirming a user-assigned identity): judged by the answer, never quoted.
            raise self._managed_failure(source, None) from None
        token = result.get("access_token") if isinstance(result, dict) else None
        if isinstance(token, str) and token:
            return token
        raise self._managed_failure(source, result)

    def _managed_failure(self, source: ManagedSource, result: Any) -> LaunchError:
        response = self._http.last
        status = response.status_code if response is not None else None
        where = f"the managed identity endpoint {source.where}"
        redirected = response is not None and redirect_error(
            response, where=where, setting=source.setting
        )
        if redirected:
            return redirected
        # IMDS answers 404 and 410 while the identity is being set up: retry them too.
        if response is not None and (status in (404, 410, 429) or (status or 0) >= 500):
            return BackendUnavailable(
                f"{where} answered HTTP {status}",
                retry_after=retry_after(response.headers.get("Retry-After")),
            )
        error, _ = _oauth_error(result if isinstance(result, dict) else _json(response))
        if error or status in (400, 401, 403):
            assigned = (
                "is the user-assigned identity AZURE_CLIENT_ID assigned to this resource?"
                if source.user_assigned
                else "is a system-assigned managed identity enabled on this resource?"
            )
            # By status: msal turns every App Service refusal into its own "invalid_scope".
            refusal = f"HTTP {status}" if status is not None else error
            return AccessDenied(f"{where} refused the token request ({refusal}): {assigned}")
        return BackendFailed(f"{where} gave an answer that is not a token (HTTP {status})")

    # -- Key Vault

    def _secret(self, ref: Ref, token: str) -> Secret:
        vault, name = ref.host, ref.path[1]
        version = _pinned(ref)
        base = self._vault_url.replace("{vault}", vault)
        url = f"{base}/secrets/{name}" + (f"/{version}" if version else "")
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}

        def attempt(timeout: float) -> Secret:
            try:
                response = self._session.get(
                    url, params={"api-version": API_VERSION}, headers=headers, timeout=timeout
                )
            except requests.RequestException as error:
                raise transport_error(
                    error,
                    where=base,
                    ca_variable="REQUESTS_CA_BUNDLE",
                    check="AZURE_KEYVAULT_URL and REQUESTS_CA_BUNDLE",
                    timeout=timeout,
                    ref=ref.text,
                ) from None
            return _secret_value(ref, response, vault, name, version)

        return retry(self.deadline, attempt)


def _pinned(ref: Ref) -> str | None:
    """The version a reference asks for: ?version=<version>, or the seed's third segment."""
    return ref.path[2] if len(ref.path) == 3 else ref.version


def _secret_value(
    ref: Ref, response: requests.Response, vault: str, name: str, version: str | None
) -> Secret:
    status = response.status_code
    redirected = redirect_error(
        response, where=f"Key Vault {vault}", setting="AZURE_KEYVAULT_URL", ref=ref.text
    )
    if redirected is not None:
        raise redirected
    # Never quote a body: an error message may hold what it is about.
    document = _json(response)
    if status == 200:
        value = document.get("value")
        if not isinstance(value, str):
            raise BackendFailed("Key Vault answered 200 without a string value", ref=ref.text)
        return Secret(value.encode("utf-8"), *_version(document, ref, version))
    code, inner = _vault_codes(document)
    if status == 404 and code == "SecretNotFound":
        shown = f"{name} version {version}" if version else name
        raise SecretNotFound(f"vault {vault} has no secret {shown}", ref=ref.text)
    if status == 401:
        raise AccessDenied(
            "Key Vault refused the token (401 Unauthorized): is the vault in tenant"
            " AZURE_TENANT_ID?",
            ref=ref.text,
        )
    if status == 403:
        raise AccessDenied(
            f"Key Vault denied access (403 {inner or code or 'Forbidden'}): the application"
            " needs 'get' on secrets (access policy or Key Vault Secrets User role), or a"
            " firewall rule blocks this address",
            ref=ref.text,
        )
    if status == 400:
        raise BadReference(
            f"Key Vault rejected the request (400 {code or 'Bad Request'})", ref=ref.text
        )
    if status == 429 or status >= 500:
        raise BackendUnavailable(
            f"Key Vault answered HTTP {status}",
            ref=ref.text,
            retry_after=retry_after(response.headers.get("Retry-After")),
        )
    raise BackendFailed(
        f"Key Vault answered HTTP {status}{f' {code}' if code else ''}: is {vault} reachable at"
        " this URL (AZURE_KEYVAULT_URL)?",
        ref=ref.text,
    )


def _version(
    document: Mapping[str, Any], ref: Ref, asked: str | None
) -> tuple[str | None, float | None]:
    """(version, created): the last segment of the answer's `id`
    (https://<vault>.vault.azure.net/secrets/<name>/<version>) and attributes.created."""
    identifier = document.get("id")
    found = identifier.rstrip("/").rsplit("/", 1)[-1] if isinstance(identifier, str) else ""
    version = found if _VERSION.fullmatch(found) else None
    if asked is not None and version is not None and version.lower() != asked.lower():
        raise BackendFailed(
            f"Key Vault answered version {version} when asked for {asked}", ref=ref.text
        )
    attributes = document.get("attributes")
    created = attributes.get("created") if isinstance(attributes, dict) else None
    if not isinstance(created, (int, float)) or isinstance(created, bool):
        created = None
    return version, None if created is None else float(created)


class _MsalHttp:
    """The HTTP client msal is given: our session (our CA bundle, no redirects), per-request
    timeouts from the deadline. It keeps the last answer so a failure is judged by its status,
    never quoted, and the last timeout so a silent authority is reported with it."""

    def __init__(self, session: requests.Session, deadline: Deadline) -> None:
        self._session = session
        self._deadline = deadline
        self.last: requests.Response | None = None
        self.timeout = deadline.attempt_timeout()

    def get(self, url: str, params: Any = None, headers: Any = None, **_: Any) -> requests.Response:
        return self._send("GET", url, params=params, headers=headers)

    def post(
        self, url: str, params: Any = None, data: Any = None, headers: Any = None, **_: Any
    ) -> requests.Response:
        return self._send("POST", url, params=params, data=data, headers=headers)

    def close(self) -> None:
        pass  # the session is the backend's

    def _send(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        self.last = None
        self.timeout = self._deadline.attempt_timeout()
        self.last = self._session.request(method, url, timeout=self.timeout, **kwargs)
        return self.last


class _NoHttpCache(dict[str, Any]):
    """msal's http_cache that keeps nothing. msal replays a 429/5xx from this cache for up to
    Retry-After (5 s by default) instead of asking again; our retry loop already honours
    Retry-After within the deadline, and one run builds one app, so a cache buys nothing."""

    def __setitem__(self, key: str, value: Any) -> None:
        pass


class FederatedToken:
    """msal's client assertion for workload identity: the token the kubelet projects into the
    pod, read again on each token request because it is rotated (like every credential file:
    non-blocking, regular files only, capped, never quoted)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __call__(self) -> str:
        token = read_credential(self.path, "AZURE_FEDERATED_TOKEN_FILE")
        if token is None:
            raise NotConfigured(f"AZURE_FEDERATED_TOKEN_FILE ({self.path}): no such file, or empty")
        return token


@dataclass(frozen=True)
class ManagedSource:
    """Where the platform's managed identity answers, as msal will find it."""

    identity: msal.ManagedIdentity  # system-assigned, or user-assigned by client ID
    where: str  # the endpoint, for messages
    setting: str  # the variable(s) that chose it, for messages
    user_assigned: bool


def managed_source(environ: Mapping[str, str], client_id: str) -> ManagedSource:
    """The managed identity endpoint, decided by msal's own rules (managed_identity.py,
    _obtain_token): App Service, Functions and Container Apps (IDENTITY_ENDPOINT and
    IDENTITY_HEADER), Azure Machine Learning (MSI_ENDPOINT and MSI_SECRET), Azure Arc
    (IDENTITY_ENDPOINT and IMDS_ENDPOINT, or the Arc agent installed), else the VM's instance
    metadata service (AZURE_POD_IDENTITY_AUTHORITY_HOST replaces its address)."""
    identity: msal.ManagedIdentity = (
        msal.UserAssignedManagedIdentity(client_id=client_id)
        if client_id
        else msal.SystemAssignedManagedIdentity()
    )
    endpoint = environ.get("IDENTITY_ENDPOINT")
    header = environ.get("IDENTITY_HEADER")
    if endpoint and header and environ.get("IDENTITY_SERVER_THUMBPRINT"):
        # msal reaches Service Fabric through a requests.Session of its own making, which
        # would not keep our deadline, CA bundle and no-redirect rules.
        raise NotConfigured(
            "Service Fabric's managed identity (IDENTITY_SERVER_THUMBPRINT) is not supported:"
            " use an application credential (AZURE_CLIENT_SECRET or a certificate)"
        )
    if endpoint and header:
        header_value("IDENTITY_HEADER", header)
        where, setting = _endpoint("IDENTITY_ENDPOINT", endpoint), "IDENTITY_ENDPOINT"
    elif environ.get("MSI_ENDPOINT") and environ.get("MSI_SECRET"):
        where, setting = _endpoint("MSI_ENDPOINT", environ["MSI_ENDPOINT"]), "MSI_ENDPOINT"
    elif endpoint and environ.get("IMDS_ENDPOINT"):
        where, setting = _endpoint("IDENTITY_ENDPOINT", endpoint), "IDENTITY_ENDPOINT"
    elif os.path.exists(ARC_AGENT):
        where, setting = ARC_ENDPOINT, "the Azure Arc agent"
    else:
        host = environ.get("AZURE_POD_IDENTITY_AUTHORITY_HOST") or IMDS_HOST
        base = _endpoint("AZURE_POD_IDENTITY_AUTHORITY_HOST", host.strip().strip("/"))
        where = f"{base}/metadata/identity/oauth2/token"
        setting = "AZURE_POD_IDENTITY_AUTHORITY_HOST (default: the instance metadata service)"
    return ManagedSource(identity, where, setting, bool(client_id))


def _endpoint(variable: str, value: str) -> str:
    """An http(s) URL from `variable`, or NotConfigured naming it."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 (raises ValueError for a port that is not one)
    except ValueError:
        raise NotConfigured(f"{variable} is not a URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise NotConfigured(f"{variable} must be an http:// or https:// URL")
    return value


def _certificate_credential(path: str, password: str | None) -> dict[str, Any]:
    """msal's certificate credential from a PEM file holding the private key and certificate."""
    text = read_credential(path, "AZURE_CLIENT_CERTIFICATE_PATH")
    if text is None:
        raise NotConfigured(f"AZURE_CLIENT_CERTIFICATE_PATH ({path}): no such file, or empty")
    key = _PEM_KEY.search(text)
    certificates = _PEM_CERTIFICATE.findall(text)
    if key is None or not certificates:
        raise NotConfigured(
            f"AZURE_CLIENT_CERTIFICATE_PATH={path}: expected PEM with a private key and a certificate"
        )
    # Only certificate users pay for this import. Loading the key now turns a wrong password
    # into a configuration error here rather than an obscure one inside msal.
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        load_pem_private_key(key.group(0).encode(), password.encode() if password else None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise NotConfigured(
            f"AZURE_CLIENT_CERTIFICATE_PATH={path}: cannot load the private key"
            " (wrong or missing AZURE_CLIENT_CERTIFICATE_PASSWORD?)"
        ) from None
    # With the certificate and no SHA-1 thumbprint, msal signs PS256 with an x5t#S256 header.
    credential: dict[str, Any] = {
        "private_key": key.group(0),
        "public_certificate": "\n".join(certificates),
    }
    if password:
        credential["passphrase"] = password
    return credential


def _authority_host(value: str | None) -> str:
    host = (value or DEFAULT_AUTHORITY).strip().rstrip("/")
    if "://" not in host:
        host = f"https://{host}"  # as azure-identity accepts a bare host name
    try:
        parts = urlsplit(host)
        parts.port  # noqa: B018 (raises ValueError for a port that is not one)
    except ValueError:  # `https://[::1`, a port of letters or out of range
        raise NotConfigured("AZURE_AUTHORITY_HOST is not a URL") from None
    if parts.scheme != "https" or not parts.hostname:
        raise NotConfigured(f"AZURE_AUTHORITY_HOST={value} must be an https:// URL")
    return host


def _vault_url(value: str | None, vault_domain: str) -> str:
    """The vault base URL, `{vault}` standing for the reference's vault name."""
    if not value:
        return f"https://{{vault}}.{vault_domain}"
    url = value.strip().rstrip("/")
    try:
        parts = urlsplit(url.replace("{vault}", "vault"))
        parts.port  # noqa: B018 (raises ValueError for a port that is not one)
    except ValueError:  # `https://[::1`, a port of letters or out of range
        raise NotConfigured("AZURE_KEYVAULT_URL is not a URL") from None
    if parts.scheme != "https":
        raise NotConfigured(
            f"AZURE_KEYVAULT_URL={value} must be an https:// URL: the token must not travel in clear"
        )
    return url


def _json(response: requests.Response | None) -> dict[str, Any]:
    if response is None:
        return {}
    try:
        document = response.json()
    except ValueError:
        return {}
    return document if isinstance(document, dict) else {}


def _oauth_error(document: Mapping[str, Any]) -> tuple[str | None, list[int]]:
    """The OAuth2 error name and AADSTS codes of an Azure AD answer; never its description."""
    error = document.get("error")
    codes = document.get("error_codes")
    return (
        error if isinstance(error, str) and _OAUTH_ERROR.fullmatch(error) else None,
        [code for code in codes if isinstance(code, int)][:3] if isinstance(codes, list) else [],
    )


def _vault_codes(document: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """Key Vault's error code and inner error code, when they are ones we know."""
    error = document.get("error")
    if not isinstance(error, dict):
        return None, None
    inner = error.get("innererror")
    inner_code = inner.get("code") if isinstance(inner, dict) else None
    code = error.get("code")
    return (
        code if isinstance(code, str) and code in _VAULT_CODES else None,
        inner_code if isinstance(inner_code, str) and inner_code in _VAULT_CODES else None,
    )
