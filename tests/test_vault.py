"""The vault backend against a real OpenBao server, end to end through the launcher."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import certifi
import hvac
import pytest

from tests import netns
from tests.conftest import Launch, served, silent_listener, without_launch_record
from tests.servers.fault_proxy import FaultProxy
from tests.servers.gate import InFlightGate
from tests.servers.openbao import OpenBao

# What this machine exports, made explicit: the launcher must still verify with VAULT_CACERT.
SYSTEM_CA = {name: certifi.where() for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE")}
APPROLE_LOGIN = "/v1/auth/approle/login"
READS = "/v1/secret/data/"


@pytest.fixture
def path(request: pytest.FixtureRequest) -> str:
    """A secret path of this test's own in the shared server."""
    return f"tests/{request.node.name}"


@pytest.fixture
def token_env(openbao: OpenBao) -> dict[str, str]:
    return {"VAULT_ADDR": openbao.url, "VAULT_TOKEN": openbao.token}


@pytest.fixture
def launch(launch_backend: Callable[..., Callable[..., Launch]], token_env: dict[str, str]) -> Callable[..., Launch]:
    """Run the launcher with --backend vault on a config; the environment defaults to the root token."""
    return launch_backend("vault", token_env)


@pytest.fixture
def proxy(openbao: OpenBao) -> Iterator[FaultProxy]:
    with FaultProxy.for_url(openbao.url) as counting:
        yield counting


@pytest.fixture(scope="module")
def approle(openbao: OpenBao) -> tuple[str, str]:
    return openbao.approle()


# -- values -------------------------------------------------------------------------------------


def test_the_default_field_is_value(openbao: OpenBao, launch: Callable[..., Launch], path: str) -> None:
    openbao.put(path, value="pw-default", password="not-this-one")
    parsed = served(launch(f'[db]\ndatabase_url = "secret://secret/{path}"\n'))
    assert parsed["db"]["database_url"] == "pw-default"


def test_a_named_field_is_read(openbao: OpenBao, launch: Callable[..., Launch], path: str) -> None:
    openbao.put(path, value="not-this-one", password="pw-named")
    parsed = served(launch(f'[db]\ndatabase_url = "secret://secret/{path}#password"\n'))
    assert parsed["db"]["database_url"] == "pw-named"


def test_an_embedded_reference_keeps_the_text_around_it(
    openbao: OpenBao, launch: Callable[..., Launch], path: str
) -> None:
    openbao.put(path, password="p4ss")
    toml = f'[db]\ndatabase_url = "postgresql://kms:secret://secret/{path}#password@db.internal:5432/kms"\n'
    assert served(launch(toml))["db"]["database_url"] == "postgresql://kms:p4ss@db.internal:5432/kms"


def test_a_mount_with_a_slash_is_written_percent_encoded(
    openbao: OpenBao, launch: Callable[..., Launch], path: str
) -> None:
    openbao.client().sys.enable_secrets_engine("kv", path="kv/team", options={"version": "2"})
    openbao.put(path, mount="kv/team", value="team-value")
    assert served(launch(f'x = "secret://kv%2Fteam/{path}"\n'))["x"] == "team-value"


def test_vault_namespace_is_sent(openbao: OpenBao, launch: Callable[..., Launch], token_env: dict[str, str]) -> None:
    openbao.client().sys.create_namespace("team-ns")
    in_namespace = hvac.Client(url=openbao.url, token=openbao.token, namespace="team-ns")
    in_namespace.sys.enable_secrets_engine("kv", path="secret", options={"version": "2"})
    in_namespace.secrets.kv.v2.create_or_update_secret(path="kms", secret={"value": "ns-value"})
    parsed = served(launch('x = "secret://secret/kms"\n', {**token_env, "VAULT_NAMESPACE": "team-ns"}))
    assert parsed["x"] == "ns-value"


# -- requests -----------------------------------------------------------------------------------


def test_many_fields_of_one_path_cost_one_read_per_path(
    openbao: OpenBao, launch: Callable[..., Launch], proxy: FaultProxy, path: str
) -> None:
    openbao.put(f"{path}/a", **{f"f{i}": f"value-{i}" for i in range(20)})
    openbao.put(f"{path}/b", value="b-value")
    toml = "".join(f'k{i} = "secret://secret/{path}/a#f{i}"\n' for i in range(20))
    toml += f'b1 = "secret://secret/{path}/b"\nb2 = "x-secret://secret/{path}/b#value"\n'
    parsed = served(launch(toml, {"VAULT_ADDR": proxy.url, "VAULT_TOKEN": openbao.token}))
    assert [parsed[f"k{i}"] for i in range(20)] == [f"value-{i}" for i in range(20)]
    assert (parsed["b1"], parsed["b2"]) == ("b-value", "x-b-value")
    assert proxy.count("GET", "/v1/secret/data/") == 2


def test_distinct_paths_are_read_concurrently(
    openbao: OpenBao, launch: Callable[..., Launch], proxy: FaultProxy, path: str
) -> None:
    for i in range(8):
        openbao.put(f"{path}/{i}", value=f"v{i}")
    proxy.gate = InFlightGate(8)  # no read is answered until all eight are asked at once
    toml = "".join(f'k{i} = "secret://secret/{path}/{i}"\n' for i in range(8))
    parsed = served(launch(toml, {"VAULT_ADDR": proxy.url, "VAULT_TOKEN": openbao.token}))
    assert [parsed[f"k{i}"] for i in range(8)] == [f"v{i}" for i in range(8)]
    assert proxy.gate.peak == 8
    assert proxy.count("GET", READS) == 8


def test_at_most_sixteen_reads_are_in_flight_at_once(
    openbao: OpenBao, launch: Callable[..., Launch], proxy: FaultProxy, path: str
) -> None:
    for i in range(40):
        openbao.put(f"{path}/{i}", value=f"v{i}")
    # Sixteen are held until all sixteen are in flight, then each is held a little longer:
    # a seventeenth, had the launcher sent one, would be in flight beside them.
    proxy.gate = InFlightGate(16)
    toml = "".join(f'k{i} = "secret://secret/{path}/{i}"\n' for i in range(40))
    result = launch(toml, {"VAULT_ADDR": proxy.url, "VAULT_TOKEN": openbao.token})
    assert [served(result)[f"k{i}"] for i in range(40)] == [f"v{i}" for i in range(40)]
    assert proxy.gate.peak == 16
    assert proxy.count("GET", READS) == 40


def test_more_concurrent_reads_than_requests_pools_by_default_print_nothing(
    openbao: OpenBao, launch: Callable[..., Launch], proxy: FaultProxy, path: str
) -> None:
    for i in range(20):
        openbao.put(f"{path}/{i}", value=f"v{i}")
    proxy.gate = InFlightGate(16)  # sixteen connections open at once, more than requests' 10
    toml = "".join(f'k{i} = "secret://secret/{path}/{i}"\n' for i in range(20))
    result = launch(toml, {"VAULT_ADDR": proxy.url, "VAULT_TOKEN": openbao.token})
    assert [served(result)[f"k{i}"] for i in range(20)] == [f"v{i}" for i in range(20)]
    assert proxy.gate.peak == 16
    # Nothing but the launch record: e.g. no urllib3 "Connection pool is full, discarding connection".
    assert without_launch_record(result.stderr) == ""


def test_a_503_is_retried(openbao: OpenBao, launch: Callable[..., Launch], proxy: FaultProxy, path: str) -> None:
    openbao.put(path, value="after-retry")
    proxy.answer(503, b'{"errors":["Vault is sealed"]}', {"Content-Type": "application/json"}, times=2)
    parsed = served(launch(f'x = "secret://secret/{path}"\n', {"VAULT_ADDR": proxy.url, "VAULT_TOKEN": openbao.token}))
    assert parsed["x"] == "after-retry"
    assert proxy.count("GET", "/v1/secret/data/") == 3


# -- failures -----------------------------------------------------------------------------------


def test_a_wrong_token_is_refused_with_77(
    openbao: OpenBao, launch: Callable[..., Launch], path: str, token_env: dict[str, str]
) -> None:
    openbao.put(path, value="unreachable")
    result = launch(f'x = "secret://secret/{path}"\n', {**token_env, "VAULT_TOKEN": "s.wrong-token-value"})
    assert result.returncode == 77
    assert result.report is None
    assert "permission denied" in result.stderr
    assert "wrong-token-value" not in result.output
    assert "unreachable" not in result.output


def test_every_missing_path_and_field_is_listed_with_65(
    openbao: OpenBao, launch: Callable[..., Launch], path: str
) -> None:
    openbao.put(path, value="present-value")
    toml = (
        f'ok = "secret://secret/{path}"\n'
        f'gone1 = "secret://secret/{path}/missing-one"\n'
        f'gone2 = "secret://secret/{path}/missing-two"\n'
        f'nofield = "secret://secret/{path}#nofield"\n'
    )
    result = launch(toml)
    assert result.returncode == 65
    assert result.report is None
    lines = result.stderr.splitlines()
    assert f"kms-launch: gone1: secret://secret/{path}/missing-one: no secret at secret/{path}/missing-one" in lines
    assert f"kms-launch: gone2: secret://secret/{path}/missing-two: no secret at secret/{path}/missing-two" in lines
    assert f"kms-launch: nofield: secret://secret/{path}#nofield: secret/{path} has no field 'nofield'" in lines
    assert len(lines) == 3
    assert "present-value" not in result.output


def test_a_field_that_is_not_a_string_is_65_naming_field_and_type(
    openbao: OpenBao, launch: Callable[..., Launch], path: str
) -> None:
    openbao.put(path, port=5432, hosts=["a", "b"])
    result = launch(f'p = "secret://secret/{path}#port"\nh = "secret://secret/{path}#hosts"\n')
    assert result.returncode == 65
    assert f"p: secret://secret/{path}#port: field 'port' of secret/{path} is a JSON number, not a string" in result.stderr
    assert f"h: secret://secret/{path}#hosts: field 'hosts' of secret/{path} is a JSON array, not a string" in result.stderr
    assert "5432" not in result.stderr


@pytest.mark.parametrize(
    "reference",
    ["secret://secret", "secret://secret/%2E%2E/sys", "secret://secret/a%2F%2Fb", "secret://vault.internal:8200/secret/x"],
)
def test_a_reference_malformed_for_vault_is_65_before_any_request(
    launch: Callable[..., Launch], proxy: FaultProxy, openbao: OpenBao, reference: str
) -> None:
    result = launch(f'x = "{reference}"\n', {"VAULT_ADDR": proxy.url, "VAULT_TOKEN": openbao.token})
    assert result.returncode == 65
    assert f"kms-launch: x: {reference}: " in result.stderr
    assert proxy.count() == 0


def test_no_credentials_at_all_is_78_before_any_request(
    launch: Callable[..., Launch], proxy: FaultProxy
) -> None:
    result = launch('x = "secret://secret/anything"\n', {"VAULT_ADDR": proxy.url})
    assert result.returncode == 78
    assert "VAULT_TOKEN" in result.stderr
    assert proxy.count() == 0


def test_a_stopped_server_is_69_within_the_deadline(
    openbao: OpenBao, launch: Callable[..., Launch], proxy: FaultProxy, ends_by_deadline,
    attempts_deadline, path: str,
) -> None:
    openbao.put(path, value="while-up")
    env = {"VAULT_ADDR": proxy.url, "VAULT_TOKEN": openbao.token}
    assert served(launch(f'x = "secret://secret/{path}"\n', env))["x"] == "while-up"
    proxy.close()  # the address stays, nothing listens on it any more
    timeout = attempts_deadline("vault")
    result = launch(f'x = "secret://secret/{path}"\n', env, "--timeout", timeout)
    assert result.returncode == 69
    assert f"cannot reach Vault at {proxy.url}: connection refused (gave up after" in result.stderr
    ends_by_deadline(result, "vault", float(timeout))


def test_a_server_that_never_answers_is_69_within_the_deadline(
    launch: Callable[..., Launch], ends_by_deadline
) -> None:
    with silent_listener() as url:
        result = launch('x = "secret://secret/kms"\n', {"VAULT_ADDR": url, "VAULT_TOKEN": "t"}, "--timeout", "1")
    assert result.returncode == 69
    assert result.stderr.startswith("kms-launch: x: secret://secret/kms: ")
    assert re.search(r"\bno\b.*\banswer\b", result.stderr)
    ends_by_deadline(result, "vault", 1)


# -- authentication and TLS ---------------------------------------------------------------------


def test_approle_login_reads_with_the_token_it_obtains(
    openbao: OpenBao, launch: Callable[..., Launch], approle: tuple[str, str], path: str
) -> None:
    openbao.put(path, value="via-approle")
    role_id, secret_id = approle
    env = {"VAULT_ADDR": openbao.url, "VAULT_ROLE_ID": role_id, "VAULT_SECRET_ID": secret_id}
    result = launch(f'x = "secret://secret/{path}"\n', env)
    assert served(result)["x"] == "via-approle"
    assert result.report is not None
    assert "VAULT_SECRET_ID" not in result.report["environ"]
    assert "VAULT_TOKEN" not in result.report["environ"]


def test_approle_with_a_wrong_secret_id_is_77(
    openbao: OpenBao, launch: Callable[..., Launch], approle: tuple[str, str]
) -> None:
    role_id, _ = approle
    env = {"VAULT_ADDR": openbao.url, "VAULT_ROLE_ID": role_id, "VAULT_SECRET_ID": "wrong-secret-id-value"}
    result = launch('x = "secret://secret/anything"\n', env)
    assert result.returncode == 77
    assert "AppRole login refused" in result.stderr
    assert "wrong-secret-id-value" not in result.output


def test_the_token_is_read_from_the_home_vault_token_file(
    openbao: OpenBao, launch: Callable[..., Launch], clean_env: dict[str, str], path: str
) -> None:
    openbao.put(path, value="via-token-file")
    Path(clean_env["HOME"], ".vault-token").write_text(openbao.token + "\n")
    assert served(launch(f'x = "secret://secret/{path}"\n', {"VAULT_ADDR": openbao.url}))["x"] == "via-token-file"


def test_the_token_is_read_from_the_credentials_directory(
    openbao: OpenBao, launch: Callable[..., Launch], tmp_path: Path, path: str
) -> None:
    openbao.put(path, value="via-credentials")
    (tmp_path / "credentials").mkdir()
    (tmp_path / "credentials" / "vault-token").write_text(openbao.token)
    env = {"VAULT_ADDR": openbao.url, "CREDENTIALS_DIRECTORY": str(tmp_path / "credentials")}
    assert served(launch(f'x = "secret://secret/{path}"\n', env))["x"] == "via-credentials"


def test_the_token_is_scrubbed_from_the_server_environment(
    openbao: OpenBao, launch: Callable[..., Launch], token_env: dict[str, str], path: str
) -> None:
    openbao.put(path, value="v")
    result = launch(f'x = "secret://secret/{path}"\n')
    served(result)
    assert result.report is not None
    assert "VAULT_TOKEN" not in result.report["environ"]
    assert openbao.token not in result.report["environ"].values()
    assert result.report["environ"]["VAULT_ADDR"] == token_env["VAULT_ADDR"]


def test_tls_is_verified_with_vault_cacert(
    openbao_tls: OpenBao, launch: Callable[..., Launch], path: str
) -> None:
    openbao_tls.put(path, value="over-tls")
    assert openbao_tls.ca is not None
    env = {"VAULT_ADDR": openbao_tls.url, "VAULT_TOKEN": openbao_tls.token, "VAULT_CACERT": openbao_tls.ca, **SYSTEM_CA}
    assert served(launch(f'x = "secret://secret/{path}"\n', env))["x"] == "over-tls"


def test_tls_without_vault_cacert_is_69_at_once_with_a_hint(
    openbao_tls: OpenBao, launch: Callable[..., Launch], path: str
) -> None:
    env = {"VAULT_ADDR": openbao_tls.url, "VAULT_TOKEN": openbao_tls.token, **SYSTEM_CA}
    result = launch(f'x = "secret://secret/{path}"\n', env, "--timeout", "20")
    assert result.returncode == 69
    assert "failed verification: set VAULT_CACERT" in result.stderr
    assert "gave up after" not in result.stderr  # final: one attempt, no retry
    assert result.elapsed < 20  # not retried until the deadline


def test_a_vault_cacert_that_does_not_exist_is_78_at_once(
    openbao_tls: OpenBao, launch: Callable[..., Launch], tmp_path: Path
) -> None:
    env = {"VAULT_ADDR": openbao_tls.url, "VAULT_TOKEN": openbao_tls.token, "VAULT_CACERT": str(tmp_path / "no-ca.pem")}
    result = launch('x = "secret://secret/anything"\n', env, "--timeout", "20")
    assert result.returncode == 78
    assert f"VAULT_CACERT ({tmp_path / 'no-ca.pem'}): no such file" in result.stderr
    assert result.elapsed < 20  # a configuration error: never retried


def test_vault_skip_verify_accepts_any_certificate(
    openbao_tls: OpenBao, launch: Callable[..., Launch], path: str
) -> None:
    openbao_tls.put(path, value="unverified")
    env = {"VAULT_ADDR": openbao_tls.url, "VAULT_TOKEN": openbao_tls.token, "VAULT_SKIP_VERIFY": "true", **SYSTEM_CA}
    result = launch(f'x = "secret://secret/{path}"\n', env)
    assert served(result)["x"] == "unverified"
    assert without_launch_record(result.stderr) == (
        f"kms-launch: VAULT_SKIP_VERIFY: the certificate of {openbao_tls.url} is not verified\n"
    )


# -- where the address and the credentials come from ----------------------------------------------


def test_without_vault_addr_the_launcher_asks_127_0_0_1_port_8200(
    openbao: OpenBao, launch: Callable[..., Launch], tmp_path: Path, path: str
) -> None:
    refused = netns.refused()
    if refused:
        pytest.skip(refused)
    openbao.put(path, value="via-the-default-address")
    host, port = openbao.url.removeprefix("http://").rsplit(":", 1)
    # In a network namespace of its own, only 127.0.0.1:8200 leads to the server.
    with netns.Namespace(tmp_path, {("127.0.0.1", 8200): (host, int(port))}) as inside:
        result = launch(f'x = "secret://secret/{path}"\n', {"VAULT_TOKEN": openbao.token}, prefix=inside.prefix)
    assert served(result)["x"] == "via-the-default-address"


def test_tls_is_verified_with_a_vault_capath_directory(
    openbao_tls: OpenBao, launch: Callable[..., Launch], tmp_path: Path, path: str
) -> None:
    openbao_tls.put(path, value="via-capath")
    assert openbao_tls.ca is not None
    capath = tmp_path / "capath"
    capath.mkdir()
    shutil.copy(openbao_tls.ca, capath / "vault-ca.pem")
    subprocess.run(["openssl", "rehash", str(capath)], check=True, capture_output=True)  # OpenSSL's lookup names
    env = {"VAULT_ADDR": openbao_tls.url, "VAULT_TOKEN": openbao_tls.token, "VAULT_CAPATH": str(capath), **SYSTEM_CA}
    assert served(launch(f'x = "secret://secret/{path}"\n', env))["x"] == "via-capath"


def test_approle_credentials_are_read_from_the_credentials_directory(
    openbao: OpenBao, launch: Callable[..., Launch], proxy: FaultProxy, approle: tuple[str, str],
    tmp_path: Path, path: str,
) -> None:
    openbao.put(path, value="via-approle-credentials")
    role_id, secret_id = approle
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "vault-role-id").write_text(role_id + "\n")
    (credentials / "vault-secret-id").write_text(secret_id + "\n")
    env = {"VAULT_ADDR": proxy.url, "CREDENTIALS_DIRECTORY": str(credentials)}
    result = launch(f'x = "secret://secret/{path}"\n', env)
    assert served(result)["x"] == "via-approle-credentials"
    assert proxy.count("POST", APPROLE_LOGIN) == 1
    assert secret_id not in result.output


def test_vault_token_comes_before_approle(
    openbao: OpenBao, launch: Callable[..., Launch], proxy: FaultProxy, approle: tuple[str, str], path: str
) -> None:
    openbao.put(path, value="via-the-token")
    role_id, _ = approle
    env = {"VAULT_ADDR": proxy.url, "VAULT_TOKEN": openbao.token,
           "VAULT_ROLE_ID": role_id, "VAULT_SECRET_ID": "a-secret-id-that-would-be-refused"}
    assert served(launch(f'x = "secret://secret/{path}"\n', env))["x"] == "via-the-token"
    assert proxy.count("POST", APPROLE_LOGIN) == 0


def test_vault_token_in_the_environment_comes_before_the_credentials_directory(
    openbao: OpenBao, launch: Callable[..., Launch], tmp_path: Path, path: str
) -> None:
    openbao.put(path, value="via-the-environment")
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "vault-token").write_text("s.a-token-vault-would-refuse")
    env = {"VAULT_ADDR": openbao.url, "VAULT_TOKEN": openbao.token, "CREDENTIALS_DIRECTORY": str(credentials)}
    assert served(launch(f'x = "secret://secret/{path}"\n', env))["x"] == "via-the-environment"


def test_approle_comes_before_the_home_vault_token_file(
    openbao: OpenBao, launch: Callable[..., Launch], proxy: FaultProxy, approle: tuple[str, str],
    clean_env: dict[str, str], path: str,
) -> None:
    openbao.put(path, value="via-approle-not-the-file")
    Path(clean_env["HOME"], ".vault-token").write_text("s.a-token-left-behind-by-a-human\n")
    role_id, secret_id = approle
    env = {"VAULT_ADDR": proxy.url, "VAULT_ROLE_ID": role_id, "VAULT_SECRET_ID": secret_id}
    assert served(launch(f'x = "secret://secret/{path}"\n', env))["x"] == "via-approle-not-the-file"
    assert proxy.count("POST", APPROLE_LOGIN) == 1


def test_the_home_vault_token_file_is_the_last_resort(
    openbao: OpenBao, launch: Callable[..., Launch], clean_env: dict[str, str], tmp_path: Path, path: str
) -> None:
    # Neither VAULT_TOKEN nor AppRole, in the environment or the credentials directory: the file.
    openbao.put(path, value="via-the-last-resort")
    Path(clean_env["HOME"], ".vault-token").write_text(openbao.token + "\n")
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "vault-role-id").write_text("a role id without its secret id")
    env = {"VAULT_ADDR": openbao.url, "CREDENTIALS_DIRECTORY": str(credentials)}
    assert served(launch(f'x = "secret://secret/{path}"\n', env))["x"] == "via-the-last-resort"
