"""The vault backend against a real OpenBao server, end to end through the launcher."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import certifi
import hvac
import pytest

from tests.conftest import Launch
from tests.servers.fault_proxy import FaultProxy
from tests.servers.openbao import OpenBao

# What this machine exports, made explicit: the launcher must still verify with VAULT_CACERT.
SYSTEM_CA = {name: certifi.where() for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE")}
STARTUP = 2.5  # seconds a launcher run may take beyond its deadline (interpreter, imports)


@pytest.fixture
def path(request: pytest.FixtureRequest) -> str:
    """A secret path of this test's own in the shared server."""
    return f"tests/{request.node.name}"


@pytest.fixture
def token_env(openbao: OpenBao) -> dict[str, str]:
    return {"VAULT_ADDR": openbao.url, "VAULT_TOKEN": openbao.token}


@pytest.fixture
def launch(
    run_launcher: Callable[..., Launch], write_config: Callable[[str], Path], token_env: dict[str, str]
) -> Callable[..., Launch]:
    """Run the launcher with --backend vault on a config; the environment defaults to the root token."""

    def run(toml: str, env: dict[str, str] | None = None, *args: str) -> Launch:
        config = write_config(toml)
        return run_launcher("--backend", "vault", "-c", str(config), *args, env=token_env if env is None else env)

    return run


@pytest.fixture
def proxy(openbao: OpenBao) -> Iterator[FaultProxy]:
    with FaultProxy.for_url(openbao.url) as counting:
        yield counting


@pytest.fixture(scope="module")
def approle(openbao: OpenBao) -> tuple[str, str]:
    return openbao.approle()


def served(result: Launch) -> dict[str, Any]:
    """The config the stand-in server was given; fails with the launcher's stderr if none."""
    assert result.returncode == 0, result.stderr
    assert result.report is not None
    return result.report["parsed"]


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
    proxy.delay = 0.5  # eight reads in a row would take 4 s
    toml = "".join(f'k{i} = "secret://secret/{path}/{i}"\n' for i in range(8))
    started = time.monotonic()
    parsed = served(launch(toml, {"VAULT_ADDR": proxy.url, "VAULT_TOKEN": openbao.token}))
    assert time.monotonic() - started < 0.5 + STARTUP
    assert [parsed[f"k{i}"] for i in range(8)] == [f"v{i}" for i in range(8)]
    assert proxy.count("GET", "/v1/secret/data/") == 8


def test_more_concurrent_reads_than_requests_pools_by_default_print_nothing(
    openbao: OpenBao, launch: Callable[..., Launch], proxy: FaultProxy, path: str
) -> None:
    for i in range(20):
        openbao.put(f"{path}/{i}", value=f"v{i}")
    proxy.delay = 0.2  # so that sixteen connections are open at once
    toml = "".join(f'k{i} = "secret://secret/{path}/{i}"\n' for i in range(20))
    result = launch(toml, {"VAULT_ADDR": proxy.url, "VAULT_TOKEN": openbao.token})
    assert [served(result)[f"k{i}"] for i in range(20)] == [f"v{i}" for i in range(20)]
    assert result.stderr == ""  # e.g. no urllib3 "Connection pool is full, discarding connection"


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


def test_a_stopped_server_is_69_within_the_deadline(tmp_path: Path, launch: Callable[..., Launch]) -> None:
    (tmp_path / "bao").mkdir()
    with OpenBao(tmp_path / "bao") as server:  # its own, so the shared one survives
        server.put("kms", value="while-up")
        env = {"VAULT_ADDR": server.url, "VAULT_TOKEN": server.token}
        assert served(launch('x = "secret://secret/kms"\n', env))["x"] == "while-up"
    started = time.monotonic()
    result = launch('x = "secret://secret/kms"\n', env, "--timeout", "2")
    elapsed = time.monotonic() - started
    assert result.returncode == 69
    assert f"cannot reach Vault at {env['VAULT_ADDR']}: connection refused (gave up after" in result.stderr
    assert elapsed < 2 + STARTUP


def test_a_server_that_never_answers_is_69_within_the_deadline(launch: Callable[..., Launch]) -> None:
    with socket.socket() as silent:  # the kernel completes connections; nobody ever answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        env = {"VAULT_ADDR": f"http://127.0.0.1:{silent.getsockname()[1]}", "VAULT_TOKEN": "t"}
        started = time.monotonic()
        result = launch('x = "secret://secret/kms"\n', env, "--timeout", "2")
        elapsed = time.monotonic() - started
    assert result.returncode == 69
    assert "no answer within" in result.stderr
    assert elapsed < 2 + STARTUP


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
    started = time.monotonic()
    result = launch(f'x = "secret://secret/{path}"\n', env, "--timeout", "20")
    assert result.returncode == 69
    assert "failed verification: set VAULT_CACERT" in result.stderr
    assert time.monotonic() - started < STARTUP + 1  # not retried until the deadline


def test_a_vault_cacert_that_does_not_exist_is_78_at_once(
    openbao_tls: OpenBao, launch: Callable[..., Launch], tmp_path: Path
) -> None:
    env = {"VAULT_ADDR": openbao_tls.url, "VAULT_TOKEN": openbao_tls.token, "VAULT_CACERT": str(tmp_path / "no-ca.pem")}
    started = time.monotonic()
    result = launch('x = "secret://secret/anything"\n', env, "--timeout", "20")
    assert result.returncode == 78
    assert f"invalid path: {tmp_path / 'no-ca.pem'}" in result.stderr
    assert time.monotonic() - started < STARTUP + 1


def test_vault_skip_verify_accepts_any_certificate(
    openbao_tls: OpenBao, launch: Callable[..., Launch], path: str
) -> None:
    openbao_tls.put(path, value="unverified")
    env = {"VAULT_ADDR": openbao_tls.url, "VAULT_TOKEN": openbao_tls.token, "VAULT_SKIP_VERIFY": "true", **SYSTEM_CA}
    result = launch(f'x = "secret://secret/{path}"\n', env)
    assert served(result)["x"] == "unverified"
    assert result.stderr == f"kms-launch: VAULT_SKIP_VERIFY: the certificate of {openbao_tls.url} is not verified\n"
