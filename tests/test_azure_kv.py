"""The azure-kv backend, against fakes of Azure AD and Key Vault over HTTPS; most tests run the
real launcher and read the stand-in's report."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from launcher import backends, refs
from tests import conftest, netns
from tests.conftest import Launch, closed_port, values_of
from tests.servers.azure_fake import DEFAULT_VAULT, SCOPE, AzureFake
from tests.servers.gate import InFlightGate
from tests.servers.tls import Authority, ClientCertificate, eventually

Run = Callable[..., Launch]


@pytest.fixture
def launch(launch_backend: Callable[..., Run]) -> Run:
    """Run kms-launch --backend azure-kv on a config, with the given environment."""
    return launch_backend("azure-kv")


def environ(azure: AzureFake, **changes: str | None) -> dict[str, str]:
    """The fake's deployment environment, with variables changed (None removes one)."""
    env = azure.environ()
    for name, value in changes.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def ref(name: str, version: str | None = None, vault: str = DEFAULT_VAULT) -> str:
    return f"secret://{vault}/secrets/{name}" + (f"/{version}" if version else "")


def open_backend(env: dict[str, str], seconds: float = 10) -> backends.Backend:
    return conftest.open_backend("azure-kv", env, seconds)


def no_requests(azure: AzureFake) -> bool:
    return not azure.authority.counts and not azure.vault.counts


# -- values -------------------------------------------------------------------------------------


def test_whole_and_embedded_references_get_their_values(azure_fake: AzureFake, launch: Any) -> None:
    azure_fake.put("db-password", "p@ss:w/rd")
    azure_fake.put("p12-password", "p12 pass")
    toml = (
        f'[db]\ndatabase_url = "postgresql://kms:{ref("db-password")}@db.internal:5432/kms"\n'
        f'[tls]\ntls_p12_password = "{ref("p12-password")}"\n'
    )
    result = launch(toml, environ(azure_fake))
    assert result.returncode == 0, result.stderr
    assert result.report is not None
    assert result.report["parsed"] == {
        "db": {"database_url": "postgresql://kms:p@ss:w/rd@db.internal:5432/kms"},
        "tls": {"tls_p12_password": "p12 pass"},
    }


def test_a_version_reads_that_version_and_none_the_latest(
    azure_fake: AzureFake, launch: Any
) -> None:
    first = azure_fake.put("rotated", "old value")
    azure_fake.put("rotated", "new value")
    toml = f'[a]\npinned = "{ref("rotated", first)}"\nlatest = "{ref("rotated")}"\n'
    result = launch(toml, environ(azure_fake))
    assert result.returncode == 0, result.stderr
    assert result.report is not None
    assert result.report["parsed"]["a"] == {"pinned": "old value", "latest": "new value"}


def test_one_token_serves_every_secret(azure_fake: AzureFake, launch: Any) -> None:
    azure_fake.authority.latency["token"] = 0.2  # wide open for a per-thread token race
    for index in range(30):
        azure_fake.put(f"secret-{index}", f"value-{index}")
    toml = "[hsm]\n" + "".join(f'k{i} = "{ref(f"secret-{i}")}"\n' for i in range(30))
    result = launch(toml, environ(azure_fake))
    assert result.returncode == 0, result.stderr
    assert azure_fake.authority.counts == {"discovery": 1, "token": 1}
    assert azure_fake.vault.counts == {"secret": 30}


def test_references_to_several_vaults_share_one_token(azure_fake: AzureFake, launch: Any) -> None:
    azure_fake.put("shared", "from vault one", vault="vault-one")
    azure_fake.put("shared", "from vault two", vault="vault-two")
    env = environ(azure_fake, AZURE_KEYVAULT_URL=f"{azure_fake.vault.url}/{{vault}}")
    toml = f'[a]\none = "{ref("shared", vault="vault-one")}"\ntwo = "{ref("shared", vault="vault-two")}"\n'
    result = launch(toml, env)
    assert result.returncode == 0, result.stderr
    assert result.report is not None
    assert result.report["parsed"]["a"] == {"one": "from vault one", "two": "from vault two"}
    assert azure_fake.authority.counts["token"] == 1


def test_distinct_secrets_are_fetched_sixteen_at_a_time(azure_fake: AzureFake) -> None:
    # Sixteen reads are held until all sixteen are in flight, then a little longer: a
    # seventeenth, had the backend sent one, would be in flight beside them.
    azure_fake.vault.gate = InFlightGate(16)
    wanted = []
    for index in range(40):
        azure_fake.put(f"slow-{index}", f"v{index}")
        wanted.append(refs.parse(ref(f"slow-{index}")))
    values = values_of(open_backend(environ(azure_fake)).fetch(wanted))
    assert values == {wanted_ref: f"v{i}".encode() for i, wanted_ref in enumerate(wanted)}
    assert azure_fake.vault.gate.peak == 16
    assert azure_fake.vault.counts["secret"] == 40


# -- credentials --------------------------------------------------------------------------------


def test_a_client_certificate_gets_the_token(
    azure_fake: AzureFake, launch: Any, azure_client_certificate: ClientCertificate
) -> None:
    azure_fake.put("db-password", "via certificate")
    env = environ(
        azure_fake,
        AZURE_CLIENT_SECRET=None,
        AZURE_CLIENT_CERTIFICATE_PATH=str(azure_client_certificate.pem_path),
    )
    result = launch(f'[db]\ndatabase_url = "{ref("db-password")}"\n', env)
    assert result.returncode == 0, result.stderr
    assert result.report is not None
    assert result.report["parsed"]["db"]["database_url"] == "via certificate"


def test_an_encrypted_certificate_key_is_read_with_its_password_which_is_scrubbed(
    azure_fake: AzureFake, launch: Any, tmp_path: Path
) -> None:
    certificate = ClientCertificate.create(tmp_path, "locked", password="pem-pass-91")
    azure_fake.client_certificate = certificate
    azure_fake.put("db-password", "unlocked")
    env = environ(
        azure_fake,
        AZURE_CLIENT_SECRET=None,
        AZURE_CLIENT_CERTIFICATE_PATH=str(certificate.pem_path),
        AZURE_CLIENT_CERTIFICATE_PASSWORD="pem-pass-91",
    )
    result = launch(f'[db]\ndatabase_url = "{ref("db-password")}"\n', env)
    assert result.returncode == 0, result.stderr
    assert result.report is not None
    assert result.report["parsed"]["db"]["database_url"] == "unlocked"
    assert "AZURE_CLIENT_CERTIFICATE_PASSWORD" not in result.report["environ"]


def test_an_encrypted_certificate_key_without_its_password_exits_78(
    azure_fake: AzureFake, launch: Any, tmp_path: Path
) -> None:
    certificate = ClientCertificate.create(tmp_path, "locked", password="pem-pass-91")
    env = environ(
        azure_fake,
        AZURE_CLIENT_SECRET=None,
        AZURE_CLIENT_CERTIFICATE_PATH=str(certificate.pem_path),
    )
    result = launch(f'[db]\ndatabase_url = "{ref("x")}"\n', env)
    assert result.returncode == 78
    assert "cannot load the private key" in result.stderr
    assert no_requests(azure_fake)


def test_an_unregistered_certificate_exits_77(
    azure_fake: AzureFake, launch: Any, tmp_path: Path
) -> None:
    stranger = ClientCertificate.create(tmp_path, "stranger")
    env = environ(
        azure_fake, AZURE_CLIENT_SECRET=None, AZURE_CLIENT_CERTIFICATE_PATH=str(stranger.pem_path)
    )
    result = launch(f'[db]\ndatabase_url = "{ref("x")}"\n', env)
    assert result.returncode == 77
    assert "invalid_client AADSTS700027" in result.stderr


def test_a_federated_token_file_gets_the_token(
    azure_fake: AzureFake, launch: Any, tmp_path: Path
) -> None:
    service_account_token = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2EifQ.c2ln"
    azure_fake.federated_tokens.add(service_account_token)
    token_file = tmp_path / "azure-identity-token"
    token_file.write_text(service_account_token)
    azure_fake.put("db-password", "via workload identity")
    env = environ(azure_fake, AZURE_CLIENT_SECRET=None, AZURE_FEDERATED_TOKEN_FILE=str(token_file))
    result = launch(f'[db]\ndatabase_url = "{ref("db-password")}"\n', env)
    assert result.returncode == 0, result.stderr
    assert result.report is not None
    assert result.report["parsed"]["db"]["database_url"] == "via workload identity"


def test_a_federated_token_no_credential_matches_exits_77(
    azure_fake: AzureFake, launch: Any, tmp_path: Path
) -> None:
    token_file = tmp_path / "azure-identity-token"
    token_file.write_text("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJvdGhlciJ9.c2ln")
    env = environ(azure_fake, AZURE_CLIENT_SECRET=None, AZURE_FEDERATED_TOKEN_FILE=str(token_file))
    result = launch(f'[db]\ndatabase_url = "{ref("x")}"\n', env)
    assert result.returncode == 77
    assert "AADSTS70021" in result.stderr


def test_the_client_secret_may_come_from_the_credentials_directory(
    azure_fake: AzureFake, launch: Any, tmp_path: Path
) -> None:
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "azure-client-secret").write_text(azure_fake.client_secret + "\n")
    azure_fake.put("db-password", "via systemd credential")
    env = environ(azure_fake, AZURE_CLIENT_SECRET=None, CREDENTIALS_DIRECTORY=str(credentials))
    result = launch(f'[db]\ndatabase_url = "{ref("db-password")}"\n', env)
    assert result.returncode == 0, result.stderr


def test_the_client_secret_is_scrubbed_from_the_server_environment(
    azure_fake: AzureFake, launch: Any
) -> None:
    azure_fake.put("db-password", "x")
    result = launch(f'[db]\ndatabase_url = "{ref("db-password")}"\n', environ(azure_fake))
    assert result.returncode == 0, result.stderr
    assert result.report is not None
    assert "AZURE_CLIENT_SECRET" not in result.report["environ"]
    assert result.report["environ"]["AZURE_CLIENT_ID"] == azure_fake.client_id


def test_no_credential_exits_78_naming_the_variables_before_any_request(
    azure_fake: AzureFake, launch: Any
) -> None:
    # With no credential at all, the platform's managed identity is used (test_azure_identity).
    env = environ(azure_fake, AZURE_TENANT_ID=None)
    result = launch(f'[db]\ndatabase_url = "{ref("x")}"\n', env)
    assert result.returncode == 78
    assert "azure-kv needs AZURE_TENANT_ID with AZURE_CLIENT_SECRET" in result.stderr
    assert no_requests(azure_fake)


def test_a_plain_http_vault_url_exits_78(azure_fake: AzureFake, launch: Any) -> None:
    env = environ(azure_fake, AZURE_KEYVAULT_URL="http://127.0.0.1:1")
    result = launch(f'[db]\ndatabase_url = "{ref("x")}"\n', env)
    assert result.returncode == 78
    assert "AZURE_KEYVAULT_URL=http://127.0.0.1:1 must be an https:// URL" in result.stderr


# -- Azure AD refusals --------------------------------------------------------------------------


def test_a_wrong_client_secret_exits_77_with_the_aadsts_code_but_never_the_secret(
    azure_fake: AzureFake, launch: Any
) -> None:
    azure_fake.echo_secrets = True  # Azure AD's error body quotes the secret it was sent
    wrong = "wrong-secret-4c7e"
    result = launch(
        f'[db]\ndatabase_url = "{ref("x")}"\n', environ(azure_fake, AZURE_CLIENT_SECRET=wrong)
    )
    assert result.returncode == 77
    assert "Azure AD refused the token request: invalid_client AADSTS7000215" in result.stderr
    assert wrong not in result.output
    assert azure_fake.authority.counts["token"] == 1  # final: not retried
    assert azure_fake.vault.counts["secret"] == 0


def test_an_unknown_application_exits_77(azure_fake: AzureFake, launch: Any) -> None:
    env = environ(azure_fake, AZURE_CLIENT_ID="00000000-0000-0000-0000-000000000000")
    result = launch(f'[db]\ndatabase_url = "{ref("x")}"\n', env)
    assert result.returncode == 77
    assert (
        "unauthorized_client AADSTS700016 (check AZURE_CLIENT_ID and AZURE_TENANT_ID)"
        in result.stderr
    )


def test_an_unknown_tenant_exits_77(azure_fake: AzureFake, launch: Any) -> None:
    env = environ(azure_fake, AZURE_TENANT_ID="contoso.onmicrosoft.com")
    result = launch(f'[db]\ndatabase_url = "{ref("x")}"\n', env)
    assert result.returncode == 77
    assert "invalid_tenant AADSTS90002" in result.stderr
    assert azure_fake.authority.counts == {"discovery": 1}


# -- Key Vault answers --------------------------------------------------------------------------


def test_a_missing_secret_or_version_exits_65_naming_the_reference(
    azure_fake: AzureFake, launch: Any
) -> None:
    azure_fake.put("present", "here")
    missing, bad_version = ref("absent"), ref("present", "0" * 32)
    toml = f'[a]\nok = "{ref("present")}"\nmissing = "{missing}"\nversion = "{bad_version}"\n'
    result = launch(toml, environ(azure_fake))
    assert result.returncode == 65
    assert (
        f"kms-launch: a.missing: {missing}: vault {DEFAULT_VAULT} has no secret absent"
        in result.stderr
    )
    assert (
        f"kms-launch: a.version: {bad_version}: vault {DEFAULT_VAULT} has no secret present version {'0' * 32}"
        in result.stderr
    )
    assert azure_fake.vault.counts["secret"] == 3  # misses are final: not retried


def test_a_forbidden_secret_exits_77(azure_fake: AzureFake, launch: Any) -> None:
    azure_fake.put("guarded", "x")
    azure_fake.deny("guarded")
    result = launch(f'[db]\ndatabase_url = "{ref("guarded")}"\n', environ(azure_fake))
    assert result.returncode == 77
    assert "Key Vault denied access (403 AccessDenied)" in result.stderr


def test_a_token_the_vault_refuses_exits_77(azure_fake: AzureFake, launch: Any) -> None:
    azure_fake.put("db-password", "x")
    azure_fake.reject_tokens = True
    result = launch(f'[db]\ndatabase_url = "{ref("db-password")}"\n', environ(azure_fake))
    assert result.returncode == 77
    assert "Key Vault refused the token (401 Unauthorized)" in result.stderr


def test_malformed_references_exit_65_before_any_request(
    azure_fake: AzureFake, launch: Any
) -> None:
    bad = {
        "underscore": ref("bad_name"),
        "too_long": ref("n" * 128),
        "not_secrets": f"secret://{DEFAULT_VAULT}/keys/k",
        "no_name": f"secret://{DEFAULT_VAULT}/secrets",
        "too_deep": f"secret://{DEFAULT_VAULT}/secrets/a/b/c",
        "field": ref("name") + "#value",
        "port": f"secret://{DEFAULT_VAULT}:443/secrets/name",
        "short_vault": ref("name", vault="ab"),
        "double_hyphen": ref("name", vault="kms--vault"),
    }
    toml = "[a]\n" + "".join(f'{key} = "{text}"\n' for key, text in bad.items())
    result = launch(toml, environ(azure_fake))
    assert result.returncode == 65
    for key in bad:
        assert f"kms-launch: a.{key}: " in result.stderr
    assert no_requests(azure_fake)  # not even a token


# -- retries, deadline, TLS ---------------------------------------------------------------------


def test_vault_throttling_waits_at_least_retry_after(azure_fake: AzureFake) -> None:
    azure_fake.put("db-password", "patience")
    azure_fake.vault.fail("secret", 429, times=1, retry_after="1")
    wanted = refs.parse(ref("db-password"))
    backend = open_backend(environ(azure_fake))
    started = time.monotonic()
    assert values_of(backend.fetch([wanted])) == {wanted: b"patience"}
    assert time.monotonic() - started >= 1.0
    assert azure_fake.vault.counts["secret"] == 2


def test_vault_server_errors_are_retried_until_it_answers(
    azure_fake: AzureFake, launch: Any
) -> None:
    azure_fake.put("db-password", "eventually")
    azure_fake.vault.fail("secret", 503, times=2)
    result = launch(f'[db]\ndatabase_url = "{ref("db-password")}"\n', environ(azure_fake))
    assert result.returncode == 0, result.stderr
    assert azure_fake.vault.counts["secret"] == 3


@pytest.mark.parametrize(
    ("endpoint", "status"), [("token", 500), ("token", 503), ("token", 429), ("discovery", 503)]
)
def test_azure_ad_failures_that_pass_are_retried(
    azure_fake: AzureFake, launch: Any, startup_allowance: Any, endpoint: str, status: int
) -> None:
    azure_fake.put("db-password", "eventually")
    # No Retry-After on 5xx: msal would replay a cached 5xx for 5 s instead of asking again.
    azure_fake.authority.fail(endpoint, status, times=2, retry_after="0" if status == 429 else None)
    result = launch(f'[db]\ndatabase_url = "{ref("db-password")}"\n', environ(azure_fake))
    assert result.returncode == 0, result.stderr
    assert azure_fake.authority.counts[endpoint] == 3
    # Retried at once: msal's replay of a cached failure would cost 5 s for each of the two.
    assert result.elapsed < 5 + startup_allowance("azure-kv")


def test_a_vault_that_keeps_failing_exits_69_when_the_deadline_passes(
    azure_fake: AzureFake, launch: Any, ends_by_deadline: Any, attempts_deadline: Any
) -> None:
    azure_fake.put("db-password", "never")
    azure_fake.vault.fail("secret", 500, times=10**6)
    timeout = attempts_deadline("azure-kv")
    result = launch(
        f'[db]\ndatabase_url = "{ref("db-password")}"\n', environ(azure_fake), "--timeout", timeout
    )
    assert result.returncode == 69
    ends_by_deadline(result, "azure-kv", float(timeout))
    # The key, the reference and what Key Vault answered, whichever attempt was cut short.
    assert result.stderr.startswith(f"kms-launch: db.database_url: {ref('db-password')}: ")
    assert "HTTP 500" in result.stderr
    assert re.search(r"gave up after \d+ attempts", result.stderr)
    assert azure_fake.vault.counts["secret"] > 1


def test_an_unreachable_authority_exits_69_when_the_deadline_passes(
    azure_fake: AzureFake, launch: Any, ends_by_deadline: Any, attempts_deadline: Any
) -> None:
    env = environ(azure_fake, AZURE_AUTHORITY_HOST=f"https://127.0.0.1:{closed_port()}")
    timeout = attempts_deadline("azure-kv")
    result = launch(f'[db]\ndatabase_url = "{ref("x")}"\n', env, "--timeout", timeout)
    assert result.returncode == 69
    assert result.stderr.startswith(f"kms-launch: db.database_url: {ref('x')}: ")
    assert "connection refused (gave up after" in result.stderr
    ends_by_deadline(result, "azure-kv", float(timeout))


def test_an_untrusted_certificate_exits_69_at_once_naming_the_ca_variable(
    azure_fake: AzureFake, launch: Any, tmp_path: Path
) -> None:
    other = Authority.create(tmp_path, "other")
    env = environ(azure_fake, REQUESTS_CA_BUNDLE=str(other.path))
    result = launch(f'[db]\ndatabase_url = "{ref("x")}"\n', env)
    assert result.returncode == 69
    assert "gave up after" not in result.stderr  # final at once, not retried for the deadline
    assert "set REQUESTS_CA_BUNDLE to the CA that signed it" in result.stderr
    assert eventually(lambda: azure_fake.authority.handshake_failures == 1)
    assert no_requests(azure_fake)


# -- nothing secret in any output ---------------------------------------------------------------


@pytest.mark.parametrize("mode", [["-v"], ["--check"]])
def test_no_secret_value_token_or_client_secret_reaches_any_output(
    azure_fake: AzureFake, launch: Any, mode: list[str]
) -> None:
    azure_fake.echo_secrets = True  # the 403 body quotes the secret's value
    azure_fake.put("good", "s3cr3t-good-a41")
    azure_fake.put("guarded", "s3cr3t-guarded-9d0")
    azure_fake.deny("guarded")
    toml = (
        f'[a]\ngood = "{ref("good")}"\nguarded = "{ref("guarded")}"\nmissing = "{ref("absent")}"\n'
    )
    result = launch(toml, environ(azure_fake), *mode)
    assert result.returncode == 77
    assert ref("guarded") in result.stderr  # the run did report the failures
    assert azure_fake.vault.counts["secret"] == 3  # and each answer, echo included, came back
    issued = azure_fake.issued_tokens()
    assert len(issued) == 1
    for secret in ("s3cr3t-good-a41", "s3cr3t-guarded-9d0", azure_fake.client_secret, *issued):
        assert secret not in result.output


def test_a_proxy_page_quoting_the_credential_never_reaches_output(
    azure_fake: AzureFake, launch: Any
) -> None:
    # msal logs an unparsable token answer verbatim; this page quotes the client secret.
    azure_fake.proxy_page = 400
    result = launch(f'[db]\ndatabase_url = "{ref("x")}"\n', environ(azure_fake), "-v")
    assert result.returncode == 69
    assert "gave an answer that is not OAuth2 (HTTP 400)" in result.stderr
    assert azure_fake.authority.counts["token"] == 1
    assert azure_fake.client_secret not in result.output


# -- the fakes are as strict as the services ----------------------------------------------------


def test_the_fake_vault_refuses_what_key_vault_refuses(azure_fake: AzureFake) -> None:
    azure_fake.put("name", "v-8f31")
    ca = str(azure_fake.ca_path)
    token_url = f"{azure_fake.authority.url}/{azure_fake.tenant}/oauth2/v2.0/token"
    form = {
        "grant_type": "client_credentials",
        "client_id": azure_fake.client_id,
        "client_secret": azure_fake.client_secret,
        "scope": SCOPE,
    }
    token = requests.post(token_url, data=form, verify=ca, timeout=5).json()["access_token"]
    url = f"{azure_fake.vault.url}/secrets/name"
    bearer = {"Authorization": f"Bearer {token}"}

    def get(params: dict[str, str], headers: dict[str, str]) -> requests.Response:
        return requests.get(url, params=params, headers=headers, verify=ca, timeout=5)

    anonymous = get({"api-version": "7.4"}, {})
    assert anonymous.status_code == 401
    assert 'resource="https://vault.azure.net"' in anonymous.headers["WWW-Authenticate"]
    assert anonymous.json()["error"]["code"] == "Unauthorized"
    assert get({"api-version": "7.4"}, {"Authorization": "Bearer forged"}).status_code == 401
    assert get({}, bearer).json()["error"]["code"] == "BadParameter"
    assert get({"api-version": "1.0"}, bearer).status_code == 400
    missing = requests.get(
        f"{azure_fake.vault.url}/secrets/other",
        params={"api-version": "7.4"},
        headers=bearer,
        verify=ca,
        timeout=5,
    )
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "SecretNotFound")
    assert get({"api-version": "7.4"}, bearer).json()["value"] == "v-8f31"
    azure_fake.deny("name")
    azure_fake.echo_secrets = True
    forbidden = get({"api-version": "7.4"}, bearer)
    assert forbidden.status_code == 403
    assert "v-8f31" in forbidden.json()["error"]["message"]  # echoes, for the no-leak tests


def test_the_fake_authority_refuses_what_azure_ad_refuses(azure_fake: AzureFake) -> None:
    ca = str(azure_fake.ca_path)
    base = f"{azure_fake.authority.url}/{azure_fake.tenant}"
    good = {
        "grant_type": "client_credentials",
        "client_id": azure_fake.client_id,
        "client_secret": azure_fake.client_secret,
        "scope": SCOPE,
    }

    def token(**changes: str | None) -> tuple[int, str, list[int]]:
        form = {k: v for k, v in {**good, **changes}.items() if v is not None}
        answer = requests.post(f"{base}/oauth2/v2.0/token", data=form, verify=ca, timeout=5)
        body = answer.json()
        return answer.status_code, body.get("error", ""), body.get("error_codes", [])

    assert token()[0] == 200
    assert token(scope="https://management.azure.com/.default") == (400, "invalid_scope", [1002012])
    assert token(grant_type="password") == (400, "unsupported_grant_type", [70003])
    assert token(client_secret=None) == (401, "invalid_client", [7000218])
    assert token(client_secret="nope") == (401, "invalid_client", [7000215])
    azure_fake.echo_secrets = True
    echoed = requests.post(
        f"{base}/oauth2/v2.0/token", data={**good, "client_secret": "nope"}, verify=ca, timeout=5
    )
    assert "nope" in echoed.json()["error_description"]  # echoes, for the no-leak tests
    discovery = requests.get(
        f"{azure_fake.authority.url}/other-tenant/v2.0/.well-known/openid-configuration",
        verify=ca,
        timeout=5,
    )
    assert (discovery.status_code, discovery.json()["error"]) == (400, "invalid_tenant")


# -- sovereign clouds ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("authority", "vault_domain"),
    [("login.microsoftonline.us", "vault.usgovcloudapi.net"), ("login.chinacloudapi.cn", "vault.azure.cn")],
    ids=["us-government", "china"],
)
def test_a_sovereign_authority_host_selects_that_clouds_vaults_and_token_scope(
    fake_ca: Any, azure_client_certificate: ClientCertificate, launch: Any, tmp_path: Path,
    authority: str, vault_domain: str,
) -> None:
    refused = netns.refused()
    if refused:
        pytest.skip(refused)
    # The cloud's real names, in a network namespace whose /etc/hosts leads them to the fakes,
    # on port 443 as in the cloud; nothing names a vault URL or a scope but the authority host.
    ca, _ = fake_ca
    vault_host = f"{DEFAULT_VAULT}.{vault_domain}"
    (tmp_path / "certificate").mkdir()
    certificate = ca.issue(tmp_path / "certificate", [authority, vault_host])
    with AzureFake(certificate, ca.path, azure_client_certificate) as fake:
        fake.scope = f"https://{vault_domain}/.default"  # the one scope this cloud's fake accepts
        fake.put("db-password", f"from {vault_domain}")
        env = {**environ(fake, AZURE_KEYVAULT_URL=None), "AZURE_AUTHORITY_HOST": f"https://{authority}"}
        routes = {("127.0.0.1", 443): ("127.0.0.1", fake.authority.port),
                  ("127.0.0.2", 443): ("127.0.0.1", fake.vault.port)}
        hosts = {authority: "127.0.0.1", vault_host: "127.0.0.2"}
        with netns.Namespace(tmp_path, routes, hosts) as inside:
            result = launch(f'[db]\ndatabase_url = "{ref("db-password")}"\n', env, prefix=inside.prefix)
        assert result.returncode == 0, result.stderr
        assert result.report is not None
        assert result.report["parsed"]["db"]["database_url"] == f"from {vault_domain}"
        assert fake.authority.counts["token"] == 1
        assert fake.vault.counts["secret"] == 1
