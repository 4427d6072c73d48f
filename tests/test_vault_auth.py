"""Vault credentials without a stored secret (JWT and Kubernetes auth), revocation of every token
kms-launch mints, credential files read safely, header-safe tokens, and mutual TLS, against real
OpenBao servers."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.conftest import Launch, served
from tests.servers.kubernetes_fake import NAMESPACE, SERVICE_ACCOUNT, KubernetesFake
from tests.servers.openbao import AUDIENCE, MutualTlsOpenBao, OpenBao

Run = Callable[..., Launch]
JWT_MOUNT = "jwt"
CUSTOM_MOUNT = "ci/jwt"


@pytest.fixture(scope="module")
def signing_key(openbao: OpenBao) -> ec.EllipticCurvePrivateKey:
    """The key OpenBao's JWT mounts trust (jwt_validation_pubkeys), as a cluster's issuer."""
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    for mount in (JWT_MOUNT, CUSTOM_MOUNT):
        openbao.jwt_auth(mount, public.decode())
    # Tokens of this role lack the default policy, which is what allows auth/token/revoke-self.
    openbao.jwt_auth(JWT_MOUNT, public.decode(), role="no-revoke", token_no_default_policy=True)
    return key


def sign(key: ec.EllipticCurvePrivateKey, audience: str = AUDIENCE, lifetime: int = 600) -> str:
    """A service-account-like token: ES256, signed with `cryptography`'s key."""
    now = int(time.time())
    claims = {
        "iss": "https://kubernetes.default.svc",
        "sub": "system:serviceaccount:kms:cosmian-kms",
        "aud": [audience],
        "iat": now,
        "nbf": now - 5,
        "exp": now + lifetime,
    }
    return jwt.encode(claims, key, algorithm="ES256")


@pytest.fixture(scope="module")
def kubernetes(openbao: OpenBao, fake_ca: Any) -> Iterator[KubernetesFake]:
    """A Kubernetes API server (TokenReview only) behind OpenBao's real Kubernetes auth method."""
    authority, certificate = fake_ca
    with KubernetesFake(certificate) as api:
        openbao.kubernetes_auth(api.url, authority.path.read_text(), NAMESPACE, SERVICE_ACCOUNT)
        yield api


@pytest.fixture
def token_file(tmp_path: Path, signing_key: ec.EllipticCurvePrivateKey) -> Path:
    path = tmp_path / "sa-token"
    path.write_text(sign(signing_key) + "\n")
    return path


@pytest.fixture
def secret(openbao: OpenBao) -> str:
    """A secret of this test's own; its reference."""
    name = uuid.uuid4().hex
    openbao.put(f"auth-tests/{name}", value=f"value-of-{name}")
    return f"secret://secret/auth-tests/{name}"


@pytest.fixture
def launch(run_launcher: Run, write_config: Callable[[str], Path]) -> Callable[..., Launch]:
    def run(ref: str, env: dict[str, str], *args: str) -> Launch:
        config = write_config(f'[db]\ndatabase_url = "{ref}"\n')
        return run_launcher("--backend", "vault", "-c", str(config), *args, env=env)

    return run


def jwt_env(openbao: OpenBao, token_file: Path, **extra: str) -> dict[str, str]:
    return {
        "VAULT_ADDR": openbao.url,
        "VAULT_AUTH_METHOD": "jwt",
        "VAULT_AUTH_ROLE": "kms",
        "VAULT_JWT_FILE": str(token_file),
        **extra,
    }


def value_of(ref: str) -> str:
    return "value-of-" + ref.rsplit("/", 1)[1]


# -- JWT and Kubernetes logins -------------------------------------------------------------------


def test_a_jwt_login_reads_the_secrets(
    openbao: OpenBao, token_file: Path, secret: str, launch: Any
) -> None:
    result = launch(secret, jwt_env(openbao, token_file))
    assert served(result) == {"db": {"database_url": value_of(secret)}}


def test_kubernetes_auth_logs_in_with_the_service_account_token(
    openbao: OpenBao, kubernetes: KubernetesFake, tmp_path: Path, secret: str, launch: Any
) -> None:
    """OpenBao's own Kubernetes method, which asks the API server to review the token."""
    token = tmp_path / "projected-token"
    token.write_text(kubernetes.service_account_token())
    before = openbao.live_tokens("auth/kubernetes/login")
    reviews = len(kubernetes.reviews)
    env = jwt_env(openbao, token, VAULT_AUTH_METHOD="kubernetes")
    assert served(launch(secret, env)) == {"db": {"database_url": value_of(secret)}}
    assert len(kubernetes.reviews) == reviews + 1  # the token really went through a review
    assert openbao.live_tokens("auth/kubernetes/login") - before == set()  # and was revoked


def test_a_service_account_token_the_cluster_did_not_sign_is_77(
    openbao: OpenBao,
    kubernetes: KubernetesFake,
    tmp_path: Path,
    signing_key: ec.EllipticCurvePrivateKey,
    secret: str,
    launch: Any,
) -> None:
    forged = tmp_path / "forged-token"
    forged.write_text(sign(signing_key))
    result = launch(secret, jwt_env(openbao, forged, VAULT_AUTH_METHOD="kubernetes"))
    assert result.returncode == 77, result.stderr
    assert "Kubernetes login at auth/kubernetes refused" in result.stderr
    assert forged.read_text() not in result.output


@pytest.mark.parametrize("mount", [CUSTOM_MOUNT, f"auth/{CUSTOM_MOUNT}", f"/auth/{CUSTOM_MOUNT}/"])
def test_vault_auth_mount_names_another_mount_as_the_cli_or_agent_writes_it(
    openbao: OpenBao, token_file: Path, secret: str, launch: Any, mount: str
) -> None:
    result = launch(secret, jwt_env(openbao, token_file, VAULT_AUTH_MOUNT=mount))
    assert served(result) == {"db": {"database_url": value_of(secret)}}


def test_a_jwt_the_role_does_not_accept_is_77_and_never_quoted(
    openbao: OpenBao, tmp_path: Path, signing_key: ec.EllipticCurvePrivateKey, secret: str,
    launch: Any,
) -> None:  # fmt: skip
    wrong = sign(signing_key, audience="someone-else")
    path = tmp_path / "wrong-audience"
    path.write_text(wrong)
    result = launch(secret, jwt_env(openbao, path))
    assert result.returncode == 77, result.stderr
    assert "JWT login at auth/jwt refused (HTTP 400): check VAULT_AUTH_ROLE" in result.stderr
    assert wrong not in result.output
    assert wrong.split(".")[2] not in result.output  # nor its signature alone


def test_an_unknown_role_is_77(
    openbao: OpenBao, token_file: Path, secret: str, launch: Any
) -> None:
    result = launch(secret, jwt_env(openbao, token_file, VAULT_AUTH_ROLE="no-such-role"))
    assert result.returncode == 77, result.stderr


def test_a_mount_without_an_auth_method_is_78(
    openbao: OpenBao, token_file: Path, secret: str, launch: Any
) -> None:
    result = launch(secret, jwt_env(openbao, token_file, VAULT_AUTH_MOUNT="not-mounted"))
    assert result.returncode in (77, 78), result.stderr  # Vault: 403 or 404, by version
    assert "JWT login at auth/not-mounted" in result.stderr


def test_kubernetes_reads_the_projected_service_account_token_by_default(
    openbao: OpenBao, secret: str, launch: Any
) -> None:
    """No VAULT_JWT_FILE: the pod's token path, which does not exist on this machine."""
    assert not os.path.exists("/var/run/secrets/kubernetes.io/serviceaccount/token")
    env = {"VAULT_ADDR": openbao.url, "VAULT_AUTH_METHOD": "kubernetes", "VAULT_AUTH_ROLE": "kms"}
    result = launch(secret, env)
    assert result.returncode == 78
    assert (
        "VAULT_JWT_FILE (/var/run/secrets/kubernetes.io/serviceaccount/token):"
        " no such file, or empty"
    ) in result.stderr


def test_kubernetes_without_a_role_is_78(
    openbao: OpenBao, token_file: Path, secret: str, launch: Any
) -> None:
    env = jwt_env(openbao, token_file, VAULT_AUTH_METHOD="kubernetes")
    del env["VAULT_AUTH_ROLE"]
    result = launch(secret, env)
    assert result.returncode == 78
    assert "VAULT_AUTH_METHOD=kubernetes needs VAULT_AUTH_ROLE" in result.stderr


@pytest.mark.parametrize("method", ["JWT", "oidc", "userpass", " jwt"])
def test_an_unknown_auth_method_is_78_listing_the_choices(
    openbao: OpenBao, token_file: Path, secret: str, launch: Any, method: str
) -> None:
    result = launch(secret, jwt_env(openbao, token_file, VAULT_AUTH_METHOD=method))
    assert result.returncode == 78
    assert "is not one of: token, approle, jwt, kubernetes" in result.stderr


def test_an_explicit_method_ignores_a_token_in_the_environment(
    openbao: OpenBao, token_file: Path, secret: str, launch: Any
) -> None:
    """VAULT_AUTH_METHOD=jwt logs in even when a (here: refused) VAULT_TOKEN is also set."""
    env = jwt_env(openbao, token_file, VAULT_TOKEN="hvs.refused-if-it-were-used")
    assert served(launch(secret, env)) == {"db": {"database_url": value_of(secret)}}


def test_vault_auth_method_token_does_not_fall_back_to_approle(
    openbao: OpenBao, secret: str, launch: Any
) -> None:
    role_id, secret_id = openbao.approle()
    env = {
        "VAULT_ADDR": openbao.url,
        "VAULT_AUTH_METHOD": "token",
        "VAULT_ROLE_ID": role_id,
        "VAULT_SECRET_ID": secret_id,
    }
    result = launch(secret, env)
    assert result.returncode == 78
    assert "no Vault credentials" in result.stderr


# -- what kms-launch mints, it revokes -----------------------------------------------------------


def test_the_live_token_listing_sees_a_jwt_login(
    openbao: OpenBao, signing_key: ec.EllipticCurvePrivateKey
) -> None:
    """The revocation tests below could not fail if the listing missed live login tokens."""
    before = openbao.live_tokens("auth/jwt/login")
    login = openbao.client("").write_data(
        "auth/jwt/login", data={"role": "kms", "jwt": sign(signing_key)}
    )
    minted = openbao.client(login["auth"]["client_token"])
    try:
        assert openbao.live_tokens("auth/jwt/login") - before == {login["auth"]["accessor"]}
    finally:
        minted.auth.token.revoke_self()


def test_the_token_a_jwt_login_minted_is_revoked_before_exec(
    openbao: OpenBao, token_file: Path, secret: str, launch: Any
) -> None:
    before = openbao.live_tokens("auth/jwt/login")
    result = launch(secret, jwt_env(openbao, token_file))
    assert served(result) == {"db": {"database_url": value_of(secret)}}
    assert openbao.live_tokens("auth/jwt/login") - before == set()


def test_the_token_an_approle_login_minted_is_revoked_before_exec(
    openbao: OpenBao, secret: str, launch: Any
) -> None:
    role_id, secret_id = openbao.approle()
    before = openbao.live_tokens("auth/approle/login")
    env = {"VAULT_ADDR": openbao.url, "VAULT_ROLE_ID": role_id, "VAULT_SECRET_ID": secret_id}
    assert served(launch(secret, env)) == {"db": {"database_url": value_of(secret)}}
    assert openbao.live_tokens("auth/approle/login") - before == set()


def test_a_minted_token_is_revoked_when_the_run_fails_too(
    openbao: OpenBao, token_file: Path, launch: Any
) -> None:
    before = openbao.live_tokens("auth/jwt/login")
    result = launch("secret://secret/auth-tests/does-not-exist", jwt_env(openbao, token_file))
    assert result.returncode == 65, result.stderr
    assert openbao.live_tokens("auth/jwt/login") - before == set()


def test_a_minted_token_is_revoked_in_check_mode(
    openbao: OpenBao, token_file: Path, secret: str, launch: Any
) -> None:
    before = openbao.live_tokens("auth/jwt/login")
    result = launch(secret, jwt_env(openbao, token_file), "--check")
    assert result.returncode == 0, result.stderr
    assert openbao.live_tokens("auth/jwt/login") - before == set()


def test_a_failed_revocation_is_a_warning_and_the_launch_goes_on(
    openbao: OpenBao, token_file: Path, secret: str, launch: Any
) -> None:
    """The secrets are read and the token only lives in this process, which exec replaces: a
    refused revoke-self must not stop the server, and says the token lives until its TTL."""
    result = launch(secret, jwt_env(openbao, token_file, VAULT_AUTH_ROLE="no-revoke"))
    assert served(result) == {"db": {"database_url": value_of(secret)}}
    assert (
        "kms-launch: could not revoke the Vault token this run obtained (HTTP 403):"
        " it stays valid until its TTL ends"
    ) in result.stderr


def test_a_token_given_by_the_operator_is_not_revoked(
    openbao: OpenBao, secret: str, launch: Any
) -> None:
    """Only what kms-launch minted: revoking VAULT_TOKEN would break the next restart."""
    given = openbao.client().auth.token.create(policies=["kms-read"], ttl="10m")["auth"]
    env = {"VAULT_ADDR": openbao.url, "VAULT_TOKEN": given["client_token"]}
    assert served(launch(secret, env)) == {"db": {"database_url": value_of(secret)}}
    looked_up = openbao.client().auth.token.lookup_accessor(given["accessor"])
    assert looked_up["data"]["accessor"] == given["accessor"]


# -- credential files are read like the config ---------------------------------------------------


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "fifo"
    os.mkfifo(path)
    return path


def test_a_fifo_as_the_jwt_file_is_78_at_once(
    openbao: OpenBao, fifo: Path, secret: str, launch: Any
) -> None:
    result = launch(secret, jwt_env(openbao, fifo), "--timeout", "20")
    assert result.returncode == 78
    assert f"VAULT_JWT_FILE ({fifo}): is a FIFO, socket or device, not a regular file" in (
        result.stderr
    )
    assert result.elapsed < 20


def test_a_device_as_the_jwt_file_is_78(openbao: OpenBao, secret: str, launch: Any) -> None:
    result = launch(secret, jwt_env(openbao, Path("/dev/zero")))
    assert result.returncode == 78
    assert "VAULT_JWT_FILE (/dev/zero): is a FIFO, socket or device" in result.stderr


def test_a_huge_jwt_file_is_78(openbao: OpenBao, tmp_path: Path, secret: str, launch: Any) -> None:
    huge = tmp_path / "huge"
    with huge.open("wb") as file:
        file.truncate(64 * 2**20)  # sparse: costs no disk
    result = launch(secret, jwt_env(openbao, huge))
    assert result.returncode == 78
    assert f"VAULT_JWT_FILE ({huge}): is larger than" in result.stderr


def test_a_vault_token_file_that_is_a_fifo_is_78_within_the_deadline(
    openbao: OpenBao, clean_env: dict[str, str], secret: str, launch: Any
) -> None:
    home_token = Path(clean_env["HOME"], ".vault-token")
    os.mkfifo(home_token)
    result = launch(secret, {"VAULT_ADDR": openbao.url}, "--timeout", "20")
    assert result.returncode == 78
    assert f"the Vault token file ({home_token}): is a FIFO" in result.stderr
    assert result.elapsed < 20


def test_a_vault_token_file_with_a_byte_ff_is_78_and_never_quoted(
    openbao: OpenBao, clean_env: dict[str, str], secret: str, launch: Any
) -> None:
    home_token = Path(clean_env["HOME"], ".vault-token")
    home_token.write_bytes(b"hvs.secret-part\xffrest-of-it\n")
    result = launch(secret, {"VAULT_ADDR": openbao.url})
    assert result.returncode == 78
    assert f"the Vault token file ({home_token}): not UTF-8 text" in result.stderr
    for leaked in ("secret-part", "rest-of-it", "0xff", "\\xff", "codec"):
        assert leaked not in result.output


def test_a_vault_token_file_with_characters_no_header_carries_is_78(
    openbao: OpenBao, clean_env: dict[str, str], secret: str, launch: Any
) -> None:
    home_token = Path(clean_env["HOME"], ".vault-token")
    home_token.write_text("hvs.tok€n-from-file\n")
    result = launch(secret, {"VAULT_ADDR": openbao.url})
    assert result.returncode == 78
    assert "holds characters an HTTP header cannot carry" in result.stderr
    assert "tok€n-from-file" not in result.output


# -- a token or namespace no HTTP header can carry -------------------------------------------------


@pytest.mark.parametrize(
    "token",
    ["hvs.tok€n", "hvs.tok\x01en", "hvs.tok\ren", "hvs.tok\ten", "hvs.to ken", "hvs.tok\x7fen"],
    ids=["euro", "control", "carriage-return", "tab", "space", "delete"],
)
def test_a_vault_token_no_header_can_carry_is_78_naming_the_variable(
    openbao: OpenBao, secret: str, launch: Any, token: str
) -> None:
    result = launch(secret, {"VAULT_ADDR": openbao.url, "VAULT_TOKEN": token})
    assert result.returncode == 78, result.stderr
    assert "VAULT_TOKEN holds characters an HTTP header cannot carry" in result.stderr
    assert "tok" not in result.output.replace("token", "")  # no part of it is quoted


@pytest.mark.parametrize("namespace", ["team-€", "team\nX-Injected: 1", "team\x1b[31m"])
def test_a_vault_namespace_no_header_can_carry_is_78_naming_the_variable(
    openbao: OpenBao, secret: str, launch: Any, namespace: str
) -> None:
    env = {"VAULT_ADDR": openbao.url, "VAULT_TOKEN": openbao.token, "VAULT_NAMESPACE": namespace}
    result = launch(secret, env)
    assert result.returncode == 78, result.stderr
    assert "VAULT_NAMESPACE holds characters an HTTP header cannot carry" in result.stderr


# -- mutual TLS ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mtls_bao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MutualTlsOpenBao]:
    with MutualTlsOpenBao(tmp_path_factory.mktemp("bao-mtls")) as server:
        server.put("kms/db", value="over-mutual-tls")
        yield server


def mtls_env(server: MutualTlsOpenBao, **extra: str) -> dict[str, str]:
    return {
        "VAULT_ADDR": server.url,
        "VAULT_TOKEN": server.token,
        "VAULT_CACERT": server.ca,
        **extra,
    }


def test_a_client_certificate_and_key_reach_a_vault_that_requires_one(
    mtls_bao: MutualTlsOpenBao, launch: Any
) -> None:
    env = mtls_env(
        mtls_bao, VAULT_CLIENT_CERT=mtls_bao.client_cert, VAULT_CLIENT_KEY=mtls_bao.client_key
    )
    assert served(launch("secret://secret/kms/db", env)) == {
        "db": {"database_url": "over-mutual-tls"}
    }


def test_a_certificate_file_holding_the_key_too_needs_no_vault_client_key(
    mtls_bao: MutualTlsOpenBao, tmp_path: Path, launch: Any
) -> None:
    both = tmp_path / "client.pem"
    both.write_bytes(
        Path(mtls_bao.client_cert).read_bytes() + Path(mtls_bao.client_key).read_bytes()
    )
    env = mtls_env(mtls_bao, VAULT_CLIENT_CERT=str(both))
    assert served(launch("secret://secret/kms/db", env)) == {
        "db": {"database_url": "over-mutual-tls"}
    }


def test_without_a_client_certificate_the_vault_refuses_the_handshake_69(
    mtls_bao: MutualTlsOpenBao, launch: Any
) -> None:
    result = launch("secret://secret/kms/db", mtls_env(mtls_bao), "--timeout", "3")
    assert result.returncode == 69, result.stderr
    assert "(TLSV13_ALERT_CERTIFICATE_REQUIRED): check" in result.stderr
    assert "VAULT_CLIENT_CERT" in result.stderr
    assert mtls_bao.token not in result.output
