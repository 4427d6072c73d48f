"""azure-kv with the platform's managed identity (no stored secret), and the credential files and
settings of every Azure identity read safely. The managed identity endpoint is a loopback fake
reached through the variables msal itself honours (IDENTITY_ENDPOINT + IDENTITY_HEADER as on App
Service; AZURE_POD_IDENTITY_AUTHORITY_HOST for the VM's metadata service): conftest points every
run at a dead loopback port otherwise, so 169.254.169.254 is never contacted."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import NO_INSTANCE_METADATA, Launch, served
from tests.servers.azure_fake import (
    APP_SERVICE_API,
    DEFAULT_VAULT,
    IMDS_API,
    MACHINE_LEARNING_API,
    MI_CLIENT_ID,
    RESOURCE,
    AzureFake,
    ManagedIdentityServer,
)

Run = Callable[..., Launch]
DIALECTS = ["app-service", "imds", "machine-learning"]
API_VERSIONS = {
    "app-service": APP_SERVICE_API,
    "imds": IMDS_API,
    "machine-learning": MACHINE_LEARNING_API,
}


@pytest.fixture
def launch(launch_backend: Callable[..., Run]) -> Run:
    return launch_backend("azure-kv")


@pytest.fixture(params=DIALECTS)
def identity(
    request: pytest.FixtureRequest, azure_fake: AzureFake
) -> Iterator[ManagedIdentityServer]:
    """The platform's token endpoint: App Service, the VM's metadata service, Machine Learning."""
    with ManagedIdentityServer(azure_fake, request.param) as server:
        yield server


@pytest.fixture
def app_service(azure_fake: AzureFake) -> Iterator[ManagedIdentityServer]:
    with ManagedIdentityServer(azure_fake, "app-service") as server:
        yield server


def config(*names: str) -> str:
    return "".join(
        f'{name.replace("-", "_")} = "secret://{DEFAULT_VAULT}/secrets/{name}"\n' for name in names
    )


def token_requests(server: ManagedIdentityServer) -> list[dict[str, str]]:
    return [{k: v[0] for k, v in r.query.items()} for r in server.requests]


# -- system- and user-assigned, with nothing stored ------------------------------------------------


def test_with_no_credential_the_system_assigned_identity_reads_the_secrets(
    azure_fake: AzureFake, identity: ManagedIdentityServer, launch: Run
) -> None:
    azure_fake.put("db-password", "from-managed-identity")
    result = launch(config("db-password"), identity.environ())
    assert served(result) == {"db_password": "from-managed-identity"}
    [asked] = token_requests(identity)
    assert "client_id" not in asked  # system-assigned: no identity named
    assert "clientid" not in asked  # (Machine Learning's spelling)
    assert asked["resource"] == RESOURCE
    assert asked["api-version"] == API_VERSIONS[identity.dialect]
    assert not azure_fake.authority.counts  # Azure AD itself is never asked


def test_the_identity_header_is_not_passed_to_the_server(
    azure_fake: AzureFake, app_service: ManagedIdentityServer, launch: Run
) -> None:
    """With it, the server could ask the platform for the identity's tokens itself."""
    azure_fake.put("db-password", "x")
    result = launch(config("db-password"), app_service.environ())
    assert served(result) == {"db_password": "x"}
    assert result.report is not None
    assert "IDENTITY_HEADER" not in result.report["environ"]
    assert "IDENTITY_ENDPOINT" in result.report["environ"]  # not a secret: kept


def test_the_machine_learning_secret_is_not_passed_to_the_server(
    azure_fake: AzureFake, launch: Run
) -> None:
    azure_fake.put("db-password", "x")
    with ManagedIdentityServer(azure_fake, "machine-learning") as endpoint:
        result = launch(config("db-password"), endpoint.environ())
    assert served(result) == {"db_password": "x"}
    assert result.report is not None
    assert "MSI_SECRET" not in result.report["environ"]


def test_azure_client_id_picks_a_user_assigned_identity(
    azure_fake: AzureFake, identity: ManagedIdentityServer, launch: Run
) -> None:
    azure_fake.put("db-password", "from-user-assigned")
    identity.system_assigned = False
    env = {**identity.environ(), "AZURE_CLIENT_ID": MI_CLIENT_ID}
    assert served(launch(config("db-password"), env)) == {"db_password": "from-user-assigned"}
    named = "clientid" if identity.dialect == "machine-learning" else "client_id"
    assert [asked.get(named) for asked in token_requests(identity)] == [MI_CLIENT_ID]


def test_one_token_serves_every_secret_of_the_run(
    azure_fake: AzureFake, identity: ManagedIdentityServer, launch: Run
) -> None:
    names = [f"secret-{n}" for n in range(12)]
    for name in names:
        azure_fake.put(name, f"value of {name}")
    result = launch(config(*names), identity.environ())
    assert served(result) == {name.replace("-", "_"): f"value of {name}" for name in names}
    assert identity.counts["token"] == 1
    assert azure_fake.vault.counts["secret"] == 12


def test_an_unassigned_user_identity_is_77_naming_azure_client_id(
    azure_fake: AzureFake, identity: ManagedIdentityServer, launch: Run
) -> None:
    env = {**identity.environ(), "AZURE_CLIENT_ID": "00000000-0000-0000-0000-000000000000"}
    result = launch(config("db-password"), env)
    assert result.returncode == 77, result.stderr
    assert "refused the token request" in result.stderr
    assert (
        "is the user-assigned identity AZURE_CLIENT_ID assigned to this resource?" in result.stderr
    )
    assert not azure_fake.vault.counts


def test_no_system_assigned_identity_is_77(
    azure_fake: AzureFake, identity: ManagedIdentityServer, launch: Run
) -> None:
    identity.system_assigned = False
    result = launch(config("db-password"), identity.environ())
    assert result.returncode == 77, result.stderr
    assert "is a system-assigned managed identity enabled on this resource?" in result.stderr


def test_a_wrong_identity_header_is_77_and_never_quoted(
    azure_fake: AzureFake, app_service: ManagedIdentityServer, launch: Run
) -> None:
    env = {**app_service.environ(), "IDENTITY_HEADER": "not-the-platform-s-header"}
    result = launch(config("db-password"), env)
    assert result.returncode == 77, result.stderr
    assert "not-the-platform-s-header" not in result.output
    assert app_service.identity_header not in result.output


def test_an_identity_header_no_http_header_can_carry_is_78(
    azure_fake: AzureFake, app_service: ManagedIdentityServer, launch: Run
) -> None:
    env = {**app_service.environ(), "IDENTITY_HEADER": "mi-€-header"}
    result = launch(config("db-password"), env)
    assert result.returncode == 78
    assert "IDENTITY_HEADER holds characters an HTTP header cannot carry" in result.stderr
    assert not app_service.counts


def test_an_unreachable_endpoint_is_69_by_the_deadline(
    azure_fake: AzureFake, launch: Run, ends_by_deadline: Callable[..., None]
) -> None:
    """The default when nothing is set: conftest's dead loopback port stands for the VM address."""
    env = {
        "AZURE_KEYVAULT_URL": azure_fake.vault.url,
        "REQUESTS_CA_BUNDLE": str(azure_fake.ca_path),
    }
    result = launch(config("db-password"), env, "--timeout", "2")
    assert result.returncode == 69, result.stderr
    assert f"cannot reach the managed identity endpoint {NO_INSTANCE_METADATA}" in result.stderr
    ends_by_deadline(result, "azure-kv", 2)


def test_a_redirect_from_the_endpoint_is_not_followed(
    azure_fake: AzureFake, app_service: ManagedIdentityServer, launch: Run
) -> None:
    with ManagedIdentityServer(azure_fake, "app-service") as elsewhere:
        app_service.respond = lambda endpoint, request: _redirect(elsewhere.endpoint_url)  # type: ignore[method-assign]
        result = launch(config("db-password"), app_service.environ())
        assert result.returncode == 69, result.stderr
        assert f"redirected to {elsewhere.endpoint_url}" in result.stderr
        assert not elsewhere.requests  # the identity header never left for another port


def _redirect(location: str) -> Any:
    from tests.servers.tls import Response

    return Response(307, headers={"Location": location})


# -- AZURE_TOKEN_CREDENTIALS chooses explicitly ---------------------------------------------------


def test_managed_identity_credential_is_used_even_with_a_client_secret_set(
    azure_fake: AzureFake, identity: ManagedIdentityServer, launch: Run
) -> None:
    azure_fake.put("db-password", "chosen-explicitly")
    env = {
        **azure_fake.environ(),  # tenant, client ID and secret of an application
        **identity.environ(),
        "AZURE_CLIENT_ID": MI_CLIENT_ID,
        "AZURE_TOKEN_CREDENTIALS": "ManagedIdentityCredential",
    }
    result = launch(config("db-password"), env)
    assert served(result) == {"db_password": "chosen-explicitly"}
    assert identity.counts["token"] == 1
    assert not azure_fake.authority.counts
    assert "AZURE_CLIENT_SECRET" not in (result.report or {}).get("environ", {})


def test_a_client_secret_is_preferred_to_the_managed_identity_by_default(
    azure_fake: AzureFake, app_service: ManagedIdentityServer, launch: Run
) -> None:
    azure_fake.put("db-password", "from-the-application")
    env = {**app_service.environ(), **azure_fake.environ()}
    assert served(launch(config("db-password"), env)) == {"db_password": "from-the-application"}
    assert not app_service.counts
    assert azure_fake.authority.counts["token"] == 1


@pytest.mark.parametrize(
    ("choice", "needs"),
    [
        ("EnvironmentCredential", "AZURE_CLIENT_SECRET or AZURE_CLIENT_CERTIFICATE_PATH"),
        ("workloadidentitycredential", "AZURE_FEDERATED_TOKEN_FILE"),
    ],
)
def test_an_application_credential_chosen_but_not_set_is_78(
    azure_fake: AzureFake, app_service: ManagedIdentityServer, launch: Run, choice: str, needs: str
) -> None:
    env = {**app_service.environ(), "AZURE_TOKEN_CREDENTIALS": choice}
    result = launch(config("db-password"), env)
    assert result.returncode == 78
    assert f"AZURE_TOKEN_CREDENTIALS={choice} needs {needs}" in result.stderr
    assert not app_service.counts


@pytest.mark.parametrize("choice", ["dev", "AzureCliCredential", "managed"])
def test_an_unsupported_token_credentials_choice_is_78(
    azure_fake: AzureFake, app_service: ManagedIdentityServer, launch: Run, choice: str
) -> None:
    env = {**app_service.environ(), "AZURE_TOKEN_CREDENTIALS": choice}
    result = launch(config("db-password"), env)
    assert result.returncode == 78
    assert f"AZURE_TOKEN_CREDENTIALS={choice!r} is not one kms-launch supports" in result.stderr


def test_service_fabric_is_78_not_a_request_outside_our_http_rules(
    azure_fake: AzureFake, app_service: ManagedIdentityServer, launch: Run
) -> None:
    env = {**app_service.environ(), "IDENTITY_SERVER_THUMBPRINT": "AB" * 20}
    result = launch(config("db-password"), env)
    assert result.returncode == 78
    assert "Service Fabric's managed identity" in result.stderr
    assert not app_service.counts


@pytest.mark.parametrize("variable", ["IDENTITY_ENDPOINT", "AZURE_POD_IDENTITY_AUTHORITY_HOST"])
@pytest.mark.parametrize("value", ["https://[::1", "http://127.0.0.1:99999/x", "ftp://127.0.0.1/"])
def test_a_malformed_endpoint_is_78_naming_the_variable(
    azure_fake: AzureFake, launch: Run, variable: str, value: str
) -> None:
    env = {"AZURE_KEYVAULT_URL": azure_fake.vault.url, variable: value}
    if variable == "IDENTITY_ENDPOINT":
        env["IDENTITY_HEADER"] = "header"
    result = launch(config("db-password"), env)
    assert result.returncode == 78, result.stderr
    assert variable in result.stderr


# -- Azure settings and credential files are read safely ------------------------------------------


@pytest.mark.parametrize("variable", ["AZURE_AUTHORITY_HOST", "AZURE_KEYVAULT_URL"])
@pytest.mark.parametrize("value", ["https://[::1", "https://[::1]:port", "https://host:65536"])
def test_a_malformed_azure_url_is_78_naming_the_variable(
    azure_fake: AzureFake, launch: Run, variable: str, value: str
) -> None:
    result = launch(config("db-password"), {**azure_fake.environ(), variable: value})
    assert result.returncode == 78, result.stderr
    assert f"{variable} is not a URL" in result.stderr
    assert "internal error" not in result.stderr


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "fifo"
    os.mkfifo(path)
    return path


@pytest.mark.parametrize(
    "variable", ["AZURE_FEDERATED_TOKEN_FILE", "AZURE_CLIENT_CERTIFICATE_PATH"]
)
def test_a_fifo_as_a_credential_file_is_78_at_once(
    azure_fake: AzureFake, launch: Run, fifo: Path, variable: str
) -> None:
    env = {**azure_fake.environ(), variable: str(fifo)}
    del env["AZURE_CLIENT_SECRET"]
    result = launch(config("db-password"), env, "--timeout", "20")
    assert result.returncode == 78
    assert f"{variable} ({fifo}): is a FIFO, socket or device, not a regular file" in result.stderr
    assert result.elapsed < 20


@pytest.mark.parametrize(
    "variable", ["AZURE_FEDERATED_TOKEN_FILE", "AZURE_CLIENT_CERTIFICATE_PATH"]
)
def test_a_device_or_huge_credential_file_is_78(
    azure_fake: AzureFake, launch: Run, tmp_path: Path, variable: str
) -> None:
    huge = tmp_path / "huge"
    with huge.open("wb") as file:
        file.truncate(64 * 2**20)  # sparse: costs no disk
    for path, reason in (
        ("/dev/zero", "is a FIFO, socket or device"),
        (str(huge), "is larger than"),
    ):
        env = {**azure_fake.environ(), variable: path}
        del env["AZURE_CLIENT_SECRET"]
        result = launch(config("db-password"), env)
        assert result.returncode == 78
        assert f"{variable} ({path}): {reason}" in result.stderr


@pytest.mark.parametrize(
    "variable", ["AZURE_FEDERATED_TOKEN_FILE", "AZURE_CLIENT_CERTIFICATE_PATH"]
)
def test_a_credential_file_with_a_byte_ff_is_78_and_never_quoted(
    azure_fake: AzureFake, launch: Run, tmp_path: Path, variable: str
) -> None:
    path = tmp_path / "credential"
    path.write_bytes(b"eyJhbGciOi.secret-part\xffrest-of-it\n")
    env = {**azure_fake.environ(), variable: str(path)}
    del env["AZURE_CLIENT_SECRET"]
    result = launch(config("db-password"), env)
    assert result.returncode == 78
    assert f"{variable} ({path}): not UTF-8 text" in result.stderr
    for leaked in ("secret-part", "rest-of-it", "\\xff", "codec"):
        assert leaked not in result.output
