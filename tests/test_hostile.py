"""A backend that is not on our side: whatever it sends, the launch ends by the deadline with a
classified exit code, carries no credential elsewhere, and prints no value and no credential.

Every remote backend meets the same scripted hostile server (tests/servers/hostile.py): trickles,
stalls, floods, redirects, garbage and, through hypothesis, arbitrary answers."""

from __future__ import annotations

import contextlib
import json
import os
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from launcher import cli
from tests.conftest import _AMBIENT, CONTRACT_BACKENDS, Launch
from tests.servers import hostile

TIMEOUT = 1.5
KEY = "db.password"
CLASSIFIED = {0, 65, 69, 77, 78}  # never 70 (a bug), never a traceback

VAULT_TOKEN = "hvs.hostile-vault-token-7c1e"
APPROLE_SECRET_ID = "approle-secret-id-93ab"
AWS_SECRET_KEY = "hostile-aws-secret-key-5d2f"
KMS_TOKEN = "kms-hostile-token-1f9a"


@dataclass
class Target:
    """How to point one backend at a URL: its environment, a reference, the credentials it
    holds (which must never be printed nor reach anything but the configured server)."""

    backend: str
    env: dict[str, str]
    reference: str
    credentials: list[str] = field(default_factory=list)

    def config(self) -> str:
        return f'[db]\npassword = "{self.reference}"\n'


def aim(kind: str, server: hostile.HostileServer, ca: str, azure: Any = None) -> Target:
    """A Target whose backend talks to `server` (HTTPS servers use the fake CA)."""
    url = server.url
    if kind == "vault":
        env = {"VAULT_ADDR": url, "VAULT_TOKEN": VAULT_TOKEN, "VAULT_CACERT": ca}
        return Target("vault", env, "secret://secret/kms/db#password", [VAULT_TOKEN])
    if kind == "vault-approle":
        env = {
            "VAULT_ADDR": url,
            "VAULT_ROLE_ID": "role-id-1",
            "VAULT_SECRET_ID": APPROLE_SECRET_ID,
            "VAULT_CACERT": ca,
        }
        return Target("vault", env, "secret://secret/kms/db#password", [APPROLE_SECRET_ID])
    if kind in ("aws-ssm", "aws-sm"):
        variable = "AWS_ENDPOINT_URL_SSM" if kind == "aws-ssm" else "AWS_ENDPOINT_URL_SECRETS_MANAGER"
        env = {
            variable: url,
            "AWS_ACCESS_KEY_ID": "AKIAHOSTILE00000001",
            "AWS_SECRET_ACCESS_KEY": AWS_SECRET_KEY,
            "AWS_CA_BUNDLE": ca,
        }
        return Target(kind, env, "secret://us-east-1/kms/db", [AWS_SECRET_KEY])
    if kind == "cosmian-kms":
        env = {"COSMIAN_KMS_SECRET_TOKEN": KMS_TOKEN, "COSMIAN_KMS_CA_CERT": ca}
        return Target(kind, env, f"secret://{server.host}:{server.port}/uid-1", [KMS_TOKEN])
    if kind == "azure-kv":  # a real token from the fake Azure AD, then the hostile vault
        env = {**azure.environ(), "AZURE_KEYVAULT_URL": url, "REQUESTS_CA_BUNDLE": ca}
        return Target("azure-kv", env, "secret://kms/secrets/db", [azure.client_secret])
    if kind == "azure-ad":  # the hostile server is the authority (OpenID discovery, token)
        env = {**azure.environ(), "AZURE_AUTHORITY_HOST": url, "REQUESTS_CA_BUNDLE": ca}
        return Target("azure-kv", env, "secret://kms/secrets/db", [azure.client_secret])
    if kind == "vault-approle-login":  # the same, named for the credential-provider cases
        return aim("vault-approle", server, ca, azure)
    if kind == "aws-web-identity":  # STS AssumeRoleWithWebIdentity is the hostile server
        token = server_token_file(ca)
        env = {
            "AWS_WEB_IDENTITY_TOKEN_FILE": token,
            "AWS_ROLE_ARN": "arn:aws:iam::123456789012:role/kms",
            "AWS_ENDPOINT_URL_STS": url,
            "AWS_CA_BUNDLE": ca,
        }
        return Target("aws-ssm", env, "secret://us-east-1/kms/db")
    if kind == "aws-instance-metadata":  # no keys: botocore asks the metadata service
        env = {"AWS_EC2_METADATA_SERVICE_ENDPOINT": url, "AWS_CA_BUNDLE": ca}
        return Target("aws-ssm", env, "secret://us-east-1/kms/db")
    raise AssertionError(f"no way to aim {kind} at a server: add it to tests/test_hostile.py")


def server_token_file(ca: str) -> str:
    """A web-identity token file beside the CA (any JWT-looking text: the server is hostile)."""
    path = os.path.join(os.path.dirname(ca), "web-identity-token")
    with open(path, "w") as file:
        file.write("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJrbXMifQ.c2lnbmF0dXJl")
    return path


REMOTE = [backend for backend in CONTRACT_BACKENDS if backend not in ("file", "env")]
KINDS = [*[b for b in REMOTE if b != "azure-kv"], "azure-kv", "azure-ad"]
# Plain HTTP where the backend allows it, so both socket kinds (plain and TLS) meet every fault;
# Azure insists on HTTPS, and a Cosmian KMS other than localhost is always HTTPS.
# Credential providers meet the same faults: a login, a token exchange or a metadata service that
# trickles must not outlive the deadline either (Azure AD's token discovery is "azure-ad").
PROVIDERS = ["vault-approle-login", "aws-web-identity", "aws-instance-metadata"]
PLAIN = {"vault", "vault-approle", "aws-ssm", "aws-sm", *PROVIDERS}


def test_every_remote_backend_has_a_way_to_be_aimed_at_the_hostile_server() -> None:
    assert {"vault", "aws-ssm", "azure-kv", "cosmian-kms"} <= set(REMOTE)
    server = hostile.HostileServer(hostile.stall)
    for kind in KINDS:
        aim(kind, server, "/ca.pem", azure=_AzureStandIn())


class _AzureStandIn:
    client_secret = "x"

    def environ(self) -> dict[str, str]:
        return {}


@pytest.fixture
def ca_path(fake_ca: Any) -> str:
    authority, _ = fake_ca
    return str(authority.path)


@pytest.fixture
def serve(fake_ca: Any) -> Iterator[Callable[..., hostile.HostileServer]]:
    """serve(behaviour, tls=..., host=...) -> a started hostile server, stopped after the test."""
    _, certificate = fake_ca
    servers: list[hostile.HostileServer] = []

    def start(
        behaviour: hostile.Behaviour,
        *,
        tls: bool,
        host: str = "127.0.0.1",
        tls_before_behaviour: bool = True,
    ) -> hostile.HostileServer:
        server = hostile.HostileServer(
            behaviour,
            context=certificate.context() if tls else None,
            host=host,
            tls_before_behaviour=tls_before_behaviour,
        ).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def _host(kind: str) -> str:
    # 127.0.0.1 is one of the names the launcher talks to in clear for cosmian-kms.
    return "127.0.0.2" if kind == "cosmian-kms" else "127.0.0.1"


def _needs_azure(kind: str, request: pytest.FixtureRequest) -> Any:
    return request.getfixturevalue("azure_fake") if kind.startswith("azure") else None


def _launch(run_launcher: Callable[..., Launch], write_config: Callable[..., Any], target: Target, *args: str) -> Launch:
    config = write_config(target.config())
    return run_launcher(
        "--backend", target.backend, "-c", str(config), "--timeout", str(TIMEOUT), *args, env=target.env
    )


def _assert_nothing_secret_in(output: str, target: Target) -> None:
    for credential in target.credentials:
        assert credential not in output


# -- 1. the deadline is absolute ------------------------------------------------------------------

FAULTS: dict[str, hostile.Behaviour] = {
    "trickles its headers": hostile.trickle_headers,
    "trickles its body": hostile.trickle_body,
    "never answers": hostile.stall,
    "sends headers and then nothing": hostile.headers_then_nothing,
    "streams an endless chunked body": hostile.endless_chunked,
    "sends a gigabyte": hostile.gigabyte,
}
# One fault per backend in the default run; every pair with -m slow (CI runs both).
QUICK = {"trickles its body"}


def _fault_cases() -> list[Any]:
    cases = []
    for kind in KINDS:
        for fault in [*FAULTS, "stalls the TLS handshake"]:
            marks = [] if fault in QUICK else [pytest.mark.slow]
            cases.append(pytest.param(kind, fault, id=f"{kind}-{fault.replace(' ', '-')}", marks=marks))
    for kind in PROVIDERS:
        for fault in ("trickles its body", "never answers"):
            cases.append(pytest.param(kind, fault, id=f"{kind}-{fault.replace(' ', '-')}"))
    return cases


@pytest.mark.parametrize(("kind", "fault"), _fault_cases())
def test_a_backend_that_misbehaves_ends_the_launch_by_the_deadline_with_69(
    kind: str,
    fault: str,
    request: pytest.FixtureRequest,
    serve: Callable[..., hostile.HostileServer],
    ca_path: str,
    run_launcher: Callable[..., Launch],
    write_config: Callable[..., Any],
    ends_by_deadline: Callable[[Launch, str, float], None],
) -> None:
    if fault == "stalls the TLS handshake":
        server = serve(hostile.stall_handshake, tls=True, host=_host(kind), tls_before_behaviour=False)
    else:
        server = serve(FAULTS[fault], tls=kind not in PLAIN, host=_host(kind))
    target = aim(kind, server, ca_path, _needs_azure(kind, request))
    result = _launch(run_launcher, write_config, target)
    assert result.returncode == 69, result.stderr
    assert f"kms-launch: {KEY}: {target.reference}: " in result.stderr
    assert "Traceback" not in result.stderr
    ends_by_deadline(result, target.backend, TIMEOUT)
    _assert_nothing_secret_in(result.output, target)


def test_an_answer_past_the_size_cap_is_a_clear_error_not_a_memory_blowup(
    serve: Callable[..., hostile.HostileServer],
    ca_path: str,
    run_launcher: Callable[..., Launch],
    write_config: Callable[..., Any],
) -> None:
    target = aim("vault", serve(hostile.gigabyte, tls=False), ca_path)
    result = _launch(run_launcher, write_config, target)
    assert result.returncode == 69
    assert "sent an answer larger than 17 MiB" in result.stderr


# -- 2. no credential follows a redirect to another origin ----------------------------------------


@pytest.mark.parametrize("kind", [*KINDS, "vault-approle"])
def test_no_credential_follows_a_redirect_to_another_origin(
    kind: str,
    request: pytest.FixtureRequest,
    serve: Callable[..., hostile.HostileServer],
    ca_path: str,
    run_launcher: Callable[..., Launch],
    write_config: Callable[..., Any],
) -> None:
    tls = kind not in PLAIN
    elsewhere = serve(hostile.answer(200, {"Content-Type": "application/json"}, b"{}"), tls=tls)
    location = f"{elsewhere.url}/collect?stolen=1"
    server = serve(hostile.redirect(location), tls=tls, host=_host(kind))
    target = aim(kind, server, ca_path, _needs_azure(kind, request))
    result = _launch(run_launcher, write_config, target)
    assert result.returncode == 69, result.stderr
    assert elsewhere.connections == 0, elsewhere.everything_received()
    # The report names where it pointed, without the query, and what to configure.
    assert f"redirected to {elsewhere.url}/collect (HTTP 307)" in result.stderr
    assert "stolen" not in result.stderr
    _assert_nothing_secret_in(result.output, target)


# -- 4. every malformed answer is a classified error ----------------------------------------------

JSON = {"Content-Type": "application/json"}
MALFORMED: dict[str, tuple[str, hostile.Behaviour]] = {
    "vault read answering a JSON array": ("vault", hostile.answer(200, JSON, b"[]")),
    "vault read answering JSON null": ("vault", hostile.answer(200, JSON, b"null")),
    "vault read whose data is a string": ("vault", hostile.answer(200, JSON, b'{"data": "x"}')),
    "vault read answering an HTML page": ("vault", hostile.answer(200, {"Content-Type": "text/html"}, b"<html>login</html>")),
    "vault read cut short": ("vault", hostile.answer(200, {**JSON, "Content-Length": "500"}, b'{"data": {')),
    "an OpenID discovery answering {}": ("azure-ad", hostile.answer(200, JSON, b"{}")),
    "an OpenID discovery answering an HTML page": ("azure-ad", hostile.answer(200, {"Content-Type": "text/html"}, b"<html/>")),
    "a KMS answering an HTML error page": ("cosmian-kms", hostile.answer(502, {"Content-Type": "text/html"}, b"<html>Bad Gateway</html>")),
    "a KMS answering JSON of the wrong shape": ("cosmian-kms", hostile.answer(200, JSON, b'{"tag": "GetResponse", "value": "x"}')),
    "a Retry-After in the year 100000000000": ("vault", hostile.answer(503, {"Retry-After": "Mon, 01 Jan 100000000000 00:00:00 GMT"})),
    "an SSM answer that is not JSON": ("aws-ssm", hostile.answer(200, {"Content-Type": "application/x-amz-json-1.1"}, b"<html/>")),
    "garbage instead of HTTP": ("vault", hostile.garbage),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_a_malformed_answer_is_a_classified_error_naming_the_reference(
    case: str,
    request: pytest.FixtureRequest,
    serve: Callable[..., hostile.HostileServer],
    ca_path: str,
    run_launcher: Callable[..., Launch],
    write_config: Callable[..., Any],
) -> None:
    kind, behaviour = MALFORMED[case]
    server = serve(behaviour, tls=kind not in PLAIN, host=_host(kind))
    target = aim(kind, server, ca_path, _needs_azure(kind, request))
    result = _launch(run_launcher, write_config, target)
    assert result.returncode in CLASSIFIED - {0}, result.stderr
    assert "internal error" not in result.stderr
    assert "Traceback" not in result.stderr
    assert target.reference in result.stderr
    _assert_nothing_secret_in(result.output, target)


# -- 8. reports say what happened -----------------------------------------------------------------


def test_the_report_says_what_the_backend_answered_when_only_the_last_attempt_was_cut_short(
    serve: Callable[..., hostile.HostileServer],
    ca_path: str,
    run_launcher: Callable[..., Launch],
    write_config: Callable[..., Any],
) -> None:
    answered: list[int] = []

    def fail_then_stall(connection: hostile.Connection) -> None:
        if len(answered) < 3:
            answered.append(1)
            hostile.answer(500)(connection)
        else:
            hostile.stall(connection)

    target = aim("vault", serve(fail_then_stall, tls=False), ca_path)
    result = _launch(run_launcher, write_config, target)
    assert result.returncode == 69
    assert len(answered) == 3
    assert "Vault answered HTTP 500" in result.stderr
    assert "the last attempt: " in result.stderr


# -- property: any answer at all ------------------------------------------------------------------

_HEADER_NAMES = st.sampled_from(
    ["Content-Type", "Content-Length", "Retry-After", "Location", "Transfer-Encoding",
     "WWW-Authenticate", "Connection", "Content-Encoding", "x-amzn-ErrorType", "X-Vault-Index"]
)  # fmt: skip
_ABSURD = st.sampled_from(
    ["Mon, 01 Jan 100000000000 00:00:00 GMT", "-1", "99999999999999999999", "nan", "inf",
     "application/json", "text/html", "chunked", "gzip", "0", "http://127.0.0.1:1/x?token=1",
     "/relative", "{echo}", "ThrottlingException", "AccessDeniedException"]
)  # fmt: skip
_HEADER_VALUES = st.one_of(_ABSURD, st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=40))
_KEYS = st.sampled_from(
    ["data", "value", "metadata", "error", "tag", "Parameters", "Name", "access_token",
     "token_endpoint", "SecretString", "version", "auth", "client_token", "__type", "id",
     "attributes"]
) | st.text(max_size=5)  # fmt: skip


def _containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.lists(children, max_size=3) | st.dictionaries(_KEYS, children, max_size=4)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8) | st.just("{echo}"),
    _containers,
    max_leaves=12,
)
_BODIES = st.one_of(
    _JSON.map(lambda document: json.dumps(document).encode()),
    st.binary(max_size=200),
    st.sampled_from([b"", b"<html><body>Service Unavailable</body></html>", b"{echo}"]),
)
_STATUSES = st.one_of(
    st.sampled_from([200, 201, 204, 301, 302, 307, 308, 400, 401, 403, 404, 409, 412, 422, 429, 500, 502, 503]),
    st.integers(200, 599),
)


@dataclass(frozen=True)
class Scripted:
    status: int
    headers: dict[str, str]
    body: bytes

    def __call__(self, connection: hostile.Connection) -> None:
        # {echo} reflects the request, token and all, as a server that echoes its input would.
        request = connection.read_request()
        echo = request.replace(b"\r", b" ").replace(b"\n", b" ").decode("latin-1")
        headers = {name: value.replace("{echo}", echo) for name, value in self.headers.items()}
        body = self.body.replace(b"{echo}", request)
        connection.send(hostile.http_response(self.status, headers, body))


@contextlib.contextmanager
def _in_process_environment(env: dict[str, str]) -> Iterator[None]:
    """os.environ as a launch would see it, and the signal handlers the CLI installs undone."""
    saved_env = dict(os.environ)
    saved_signals = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    for name in _AMBIENT:
        os.environ.pop(name, None)
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        for signum, handler in saved_signals.items():
            signal.signal(signum, handler)


PROPERTY_TIMEOUT = "0.4"


@pytest.mark.parametrize("kind", KINDS)
def test_any_answer_at_all_gives_a_classified_exit_and_leaks_nothing(
    kind: str,
    request: pytest.FixtureRequest,
    serve: Callable[..., hostile.HostileServer],
    ca_path: str,
    tmp_path: Any,
    capfd: pytest.CaptureFixture[str],
) -> None:
    server = serve(hostile.stall, tls=kind not in PLAIN, host=_host(kind))
    target = aim(kind, server, ca_path, _needs_azure(kind, request))
    config = tmp_path / "kms.toml"
    config.write_text(target.config())
    argv = ["--check", "--backend", target.backend, "-c", str(config), "--timeout", PROPERTY_TIMEOUT]

    @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(status=_STATUSES, headers=st.dictionaries(_HEADER_NAMES, _HEADER_VALUES, max_size=4), body=_BODIES)
    def any_answer(status: int, headers: dict[str, str], body: bytes) -> None:
        server.behaviour = Scripted(status, headers, body)
        with _in_process_environment(target.env):
            code = cli.cli(argv)
        out, err = capfd.readouterr()
        assert code in CLASSIFIED, err
        assert "internal error" not in err
        assert "Traceback" not in err
        _assert_nothing_secret_in(out + err, target)

    any_answer()
