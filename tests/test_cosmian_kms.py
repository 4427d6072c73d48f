"""The cosmian-kms backend, against a fake Cosmian KMS (KMIP 2.1 JSON) over HTTPS, and over plain
HTTP for the loopback names; most tests run the real launcher and read the stand-in's report."""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from launcher import backends, refs
from launcher.errors import BadSecretValue, Failures
from tests import conftest
from tests.conftest import Launch, closed_port, values_of
from tests.servers.cosmian_fake import ENCODINGS, CosmianFake, Encoding, get_request
from tests.servers.gate import InFlightGate
from tests.servers.tls import Authority, eventually

Run = Callable[..., Launch]


@pytest.fixture
def kms(cosmian_fake: CosmianFake) -> CosmianFake:
    """The HTTPS fake on 127.0.0.2, a name the launcher must reach over TLS."""
    return cosmian_fake


@pytest.fixture
def launch(launch_backend: Callable[..., Run]) -> Run:
    """Run kms-launch --backend cosmian-kms on a config, with the given environment."""
    return launch_backend("cosmian-kms")


def trusting(kms: CosmianFake, **extra: str) -> dict[str, str]:
    """The environment of a launcher that trusts the fake's CA."""
    return {"COSMIAN_KMS_CA_CERT": str(kms.ca_path), **extra}


def open_backend(environ: dict[str, str], seconds: float = 10) -> backends.Backend:
    return conftest.open_backend("cosmian-kms", environ, seconds)


# -- values -------------------------------------------------------------------------------------


def test_whole_and_embedded_references_get_their_values(kms: CosmianFake, launch: Any) -> None:
    password = kms.ref(kms.put_secret_data(b"db-p@ss"))
    p12 = kms.ref(kms.put_opaque(b"p12-pass"))
    toml = (
        f'[db]\ndatabase_url = "postgresql://kms:{password}@db.internal:5432/kms"\n'
        f'[tls]\ntls_p12_password = "{p12}"\n'
    )
    result = launch(toml, trusting(kms))
    assert result.returncode == 0, result.stderr
    assert result.report is not None
    assert result.report["parsed"] == {
        "db": {"database_url": "postgresql://kms:db-p@ss@db.internal:5432/kms"},
        "tls": {"tls_p12_password": "p12-pass"},
    }


@pytest.mark.parametrize("encoding", ENCODINGS, ids=str)
@pytest.mark.parametrize("style", ["SecretData", "OpaqueObject"])
def test_every_answer_encoding_of_both_object_types_gives_the_bytes(
    kms: CosmianFake, style: str, encoding: Encoding
) -> None:
    value = b"\x00value \xff\xfe in " + style.encode()
    put = kms.put_secret_data if style == "SecretData" else kms.put_opaque
    ref = refs.parse(kms.ref(put(value, encoding)))
    assert values_of(open_backend(trusting(kms)).fetch([ref])) == {ref: value}


def test_a_non_utf8_object_used_as_text_exits_65_naming_the_reference(
    kms: CosmianFake, launch: Any
) -> None:
    ref = kms.ref(kms.put_opaque(b"\xff\xfe binary"))
    result = launch(f'[tls]\ntls_p12_password = "{ref}"\n', trusting(kms))
    assert result.returncode == 65
    assert f"kms-launch: tls.tls_p12_password: {ref}: the secret is not UTF-8 text" in result.stderr
    assert result.report is None


def test_a_non_utf8_object_as_a_file_is_delivered_byte_for_byte(
    kms: CosmianFake, launch: Any
) -> None:
    value = bytes(range(256))
    ref = kms.ref(kms.put_opaque(value))
    result = launch(
        f'[tls]\ntls_p12_file = "secret+file://{ref[len("secret://") :]}"\n', trusting(kms)
    )
    assert result.returncode == 0, result.stderr
    assert result.report is not None
    path = result.report["parsed"]["tls"]["tls_p12_file"]
    assert base64.b64decode(result.report["files"][path]["bytes_b64"]) == value


# -- scheme and TLS -----------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_the_loopback_names_are_reached_over_plain_http(
    cosmian_plain_fake: CosmianFake, launch: Any, host: str
) -> None:
    ref = cosmian_plain_fake.ref(cosmian_plain_fake.put_secret_data(b"in clear"), host=host)
    result = launch(f'[db]\ndatabase_url = "{ref}"\n', {})
    assert result.returncode == 0, result.stderr
    assert result.report is not None
    assert result.report["parsed"]["db"]["database_url"] == "in clear"
    assert cosmian_plain_fake.counts["kmip"] == 1


def test_the_ipv6_loopback_in_brackets_is_reached_over_plain_http(launch: Any) -> None:
    try:
        fake = CosmianFake("::1")
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    with fake:
        ref = fake.ref(fake.put_secret_data(b"over v6"))
        assert ref.startswith("secret://[::1]:")
        result = launch(f'[db]\ndatabase_url = "{ref}"\n', {})
    assert result.returncode == 0, result.stderr
    assert result.report is not None
    assert result.report["parsed"]["db"]["database_url"] == "over v6"


def test_any_other_host_is_never_spoken_to_in_clear(launch: Any, attempts_deadline: Any) -> None:
    with CosmianFake("127.0.0.2") as plain:  # plain HTTP on a name that must get https
        ref = plain.ref(plain.put_secret_data(b"must not travel in clear"))
        result = launch(f'[db]\ndatabase_url = "{ref}"\n', {}, "--timeout", attempts_deadline("cosmian-kms"))
        assert plain.counts["kmip"] == 0
    assert result.returncode == 69
    assert "TLS handshake with https://127.0.0.2:" in result.stderr


@pytest.mark.parametrize(
    ("text", "url"),
    [
        ("secret://localhost/id", "http://localhost:9998/kmip/2_1"),
        ("secret://127.0.0.1:9000/id", "http://127.0.0.1:9000/kmip/2_1"),
        ("secret://[::1]/id", "http://[::1]:9998/kmip/2_1"),
        ("secret://localhost.evil.example/id", "https://localhost.evil.example:9998/kmip/2_1"),
        ("secret://127.0.0.10/id", "https://127.0.0.10:9998/kmip/2_1"),
        ("secret://[::2]:443/id", "https://[::2]:443/kmip/2_1"),
        ("secret://kms.internal/id", "https://kms.internal:9998/kmip/2_1"),
    ],
)
def test_http_only_for_exactly_the_loopback_names_and_port_9998_by_default(
    text: str, url: str
) -> None:
    assert open_backend({}).url(refs.parse(text)) == url  # type: ignore[attr-defined]


def test_an_untrusted_certificate_exits_69_at_once_naming_the_ca_variable(
    kms: CosmianFake, launch: Any
) -> None:
    ref = kms.ref(kms.put_secret_data(b"x"))
    result = launch(f'[db]\ndatabase_url = "{ref}"\n', {})  # machine's bundle: fake CA unknown
    assert result.returncode == 69
    assert "gave up after" not in result.stderr  # final at once, not retried for the deadline
    assert "is not trusted" in result.stderr
    assert "set COSMIAN_KMS_CA_CERT to the CA that signed it" in result.stderr
    assert eventually(lambda: kms.handshake_failures == 1)
    assert kms.counts["kmip"] == 0


@pytest.mark.parametrize("setting", ["true", "1"])
def test_insecure_certs_skips_verification_but_still_uses_tls(
    kms: CosmianFake, launch: Any, setting: str
) -> None:
    ref = kms.ref(kms.put_secret_data(b"over unverified tls"))
    result = launch(f'[db]\ndatabase_url = "{ref}"\n', {"COSMIAN_KMS_INSECURE_CERTS": setting})
    assert result.returncode == 0, result.stderr
    assert result.report is not None
    assert result.report["parsed"]["db"]["database_url"] == "over unverified tls"
    assert kms.tls is not None  # an HTTPS-only server...
    assert kms.counts["kmip"] == 1  # ...answered
    assert "KMS certificates are not verified" in result.stderr


def test_an_unknown_insecure_certs_setting_exits_78(kms: CosmianFake, launch: Any) -> None:
    ref = kms.ref(kms.put_secret_data(b"x"))
    result = launch(f'[db]\ndatabase_url = "{ref}"\n', {"COSMIAN_KMS_INSECURE_CERTS": "maybe"})
    assert result.returncode == 78
    assert "COSMIAN_KMS_INSECURE_CERTS must be true, 1, false or 0" in result.stderr
    assert kms.counts["kmip"] == 0


def test_cosmian_ca_cert_takes_precedence_over_requests_ca_bundle(
    kms: CosmianFake, launch: Any, tmp_path: Path
) -> None:
    other = Authority.create(tmp_path, "other")
    ref = kms.ref(kms.put_secret_data(b"trusted"))
    env = trusting(kms, REQUESTS_CA_BUNDLE=str(other.path))
    assert launch(f'[db]\ndatabase_url = "{ref}"\n', env).returncode == 0


def test_requests_ca_bundle_alone_is_trusted(kms: CosmianFake, launch: Any) -> None:
    ref = kms.ref(kms.put_secret_data(b"trusted"))
    result = launch(f'[db]\ndatabase_url = "{ref}"\n', {"REQUESTS_CA_BUNDLE": str(kms.ca_path)})
    assert result.returncode == 0, result.stderr


# -- credentials --------------------------------------------------------------------------------


def test_the_bearer_token_is_sent_and_scrubbed_from_the_server_environment(
    kms: CosmianFake, launch: Any
) -> None:
    kms.token = "kms-token-6d1e"
    ref = kms.ref(kms.put_secret_data(b"needs a token"))
    result = launch(
        f'[db]\ndatabase_url = "{ref}"\n', trusting(kms, COSMIAN_KMS_SECRET_TOKEN=kms.token)
    )
    assert result.returncode == 0, result.stderr
    assert result.report is not None
    assert result.report["parsed"]["db"]["database_url"] == "needs a token"
    assert "COSMIAN_KMS_SECRET_TOKEN" not in result.report["environ"]
    assert result.report["environ"]["COSMIAN_KMS_CA_CERT"] == str(kms.ca_path)


def test_the_token_may_come_from_the_credentials_directory(
    kms: CosmianFake, launch: Any, tmp_path: Path
) -> None:
    kms.token = "kms-token-from-systemd"
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "cosmian-kms-secret-token").write_text(kms.token + "\n")
    ref = kms.ref(kms.put_secret_data(b"ok"))
    result = launch(
        f'[db]\ndatabase_url = "{ref}"\n', trusting(kms, CREDENTIALS_DIRECTORY=str(credentials))
    )
    assert result.returncode == 0, result.stderr


def test_no_token_for_a_kms_that_requires_one_exits_77_saying_which_variable(
    kms: CosmianFake, launch: Any
) -> None:
    kms.token = "required"
    ref = kms.ref(kms.put_secret_data(b"x"))
    result = launch(f'[db]\ndatabase_url = "{ref}"\n', trusting(kms))
    assert result.returncode == 77
    assert (
        f"kms-launch: db.database_url: {ref}: the KMS requires authentication: set COSMIAN_KMS_SECRET_TOKEN"
        in result.stderr
    )
    assert kms.counts["kmip"] == 1  # final: not retried


def test_a_wrong_token_exits_77(kms: CosmianFake, launch: Any) -> None:
    kms.token = "right"
    ref = kms.ref(kms.put_secret_data(b"x"))
    result = launch(
        f'[db]\ndatabase_url = "{ref}"\n', trusting(kms, COSMIAN_KMS_SECRET_TOKEN="wrong")
    )
    assert result.returncode == 77
    assert (
        "the KMS refused the token in COSMIAN_KMS_SECRET_TOKEN (401 Unauthorized)" in result.stderr
    )


# -- errors -------------------------------------------------------------------------------------


def test_an_unknown_object_exits_65_naming_the_reference(kms: CosmianFake, launch: Any) -> None:
    present = kms.ref(kms.put_secret_data(b"here"))
    missing = kms.ref("0b8c5e0e-unknown")
    result = launch(f'[db]\ndatabase_url = "{present}"\npassword = "{missing}"\n', trusting(kms))
    assert result.returncode == 65
    assert (
        f"kms-launch: db.password: {missing}: the KMS has no object '0b8c5e0e-unknown'"
        in result.stderr
    )
    assert present not in result.stderr
    assert kms.counts["kmip"] == 2  # the miss is final: not retried


def test_a_symmetric_key_is_not_a_secret_and_exits_65(kms: CosmianFake, launch: Any) -> None:
    ref = kms.ref(kms.put_symmetric_key(bytes(32)))
    result = launch(f'[db]\ndatabase_url = "{ref}"\n', trusting(kms))
    assert result.returncode == 65
    assert "the object is a SymmetricKey, not SecretData or OpaqueObject" in result.stderr


def test_a_symmetric_key_is_a_bad_secret_value_for_the_backend(kms: CosmianFake) -> None:
    ref = refs.parse(kms.ref(kms.put_symmetric_key(bytes(16))))
    with pytest.raises(Failures) as caught:
        open_backend(trusting(kms)).fetch([ref])
    assert [(type(e), e.ref) for e in caught.value.errors] == [(BadSecretValue, ref.text)]


def test_malformed_references_exit_65_before_any_request(kms: CosmianFake, launch: Any) -> None:
    port = kms.port
    bad = {
        "no_id": f"secret://127.0.0.2:{port}",
        "two_segments": f"secret://127.0.0.2:{port}/a/b",
        "field": f"secret://127.0.0.2:{port}/id#value",
        "odd_host": f"secret://kms%2Fx:{port}/id",
    }
    toml = "[db]\n" + "".join(f'{key} = "{ref}"\n' for key, ref in bad.items())
    result = launch(toml, trusting(kms))
    assert result.returncode == 65
    for key in bad:
        assert f"kms-launch: db.{key}: " in result.stderr
    assert kms.counts["kmip"] == 0


# -- retries, deadline, concurrency ------------------------------------------------------------


def test_server_errors_are_retried_until_the_kms_answers(kms: CosmianFake, launch: Any) -> None:
    kms.fail("kmip", 503, times=2)
    ref = kms.ref(kms.put_secret_data(b"eventually"))
    result = launch(f'[db]\ndatabase_url = "{ref}"\n', trusting(kms))
    assert result.returncode == 0, result.stderr
    assert kms.counts["kmip"] == 3


def test_throttling_waits_at_least_retry_after(kms: CosmianFake) -> None:
    kms.fail("kmip", 429, times=1, retry_after="1")
    ref = refs.parse(kms.ref(kms.put_secret_data(b"patience")))
    started = time.monotonic()
    assert values_of(open_backend(trusting(kms)).fetch([ref])) == {ref: b"patience"}
    assert time.monotonic() - started >= 1.0
    assert kms.counts["kmip"] == 2


def test_a_kms_that_keeps_failing_exits_69_when_the_deadline_passes(
    kms: CosmianFake, launch: Any, ends_by_deadline: Any, attempts_deadline: Any
) -> None:
    kms.fail("kmip", 500, times=10**6)
    ref = kms.ref(kms.put_secret_data(b"never"))
    timeout = attempts_deadline("cosmian-kms")
    result = launch(f'[db]\ndatabase_url = "{ref}"\n', trusting(kms), "--timeout", timeout)
    assert result.returncode == 69
    ends_by_deadline(result, "cosmian-kms", float(timeout))
    # The key, the reference and what the KMS answered, whichever attempt the deadline cut short.
    assert result.stderr.startswith(f"kms-launch: db.database_url: {ref}: ")
    assert "HTTP 500" in result.stderr
    assert re.search(r"gave up after \d+ attempts", result.stderr)
    assert kms.counts["kmip"] > 2


def test_an_unreachable_kms_exits_69_when_the_deadline_passes(
    launch: Any, ends_by_deadline: Any, attempts_deadline: Any
) -> None:
    ref = f"secret://127.0.0.1:{closed_port()}/some-id"
    timeout = attempts_deadline("cosmian-kms")
    result = launch(f'[db]\ndatabase_url = "{ref}"\n', {}, "--timeout", timeout)
    assert result.returncode == 69
    assert result.stderr.startswith(f"kms-launch: db.database_url: {ref}: ")
    assert "connection refused (gave up after" in result.stderr
    ends_by_deadline(result, "cosmian-kms", float(timeout))


def test_distinct_objects_are_fetched_sixteen_at_a_time(kms: CosmianFake) -> None:
    # Sixteen Gets are held until all sixteen are in flight, then a little longer: a
    # seventeenth, had the backend sent one, would be in flight beside them.
    kms.gate = InFlightGate(16)
    wanted = [refs.parse(kms.ref(kms.put_secret_data(b"v%d" % i))) for i in range(40)]
    values = values_of(open_backend(trusting(kms)).fetch(wanted))
    assert values == {ref: b"v%d" % i for i, ref in enumerate(wanted)}
    assert kms.gate.peak == 16
    assert kms.counts["kmip"] == 40


# -- nothing secret in any output ---------------------------------------------------------------


@pytest.mark.parametrize("mode", [["-v"], ["--check"]])
def test_no_object_bytes_or_token_reach_any_output(
    kms: CosmianFake, launch: Any, mode: list[str]
) -> None:
    kms.token = "tok-3f9a0c"
    kms.echo_secrets = True  # error bodies quote the object bytes: they must go no further
    good = kms.ref(kms.put_secret_data(b"s3cr3t-good-5e1"))
    echoed = kms.ref(kms.put_secret_data(b"s3cr3t-echoed-8b2"))  # quoted by the 422 below
    missing = kms.ref("no-such-object")
    toml = f'[db]\nurl = "{good}"\nother = "{echoed}"\nmissing = "{missing}"\n'
    result = launch(toml, trusting(kms, COSMIAN_KMS_SECRET_TOKEN=kms.token), *mode)
    assert result.returncode == 65
    assert missing in result.stderr  # the run did report the failure
    assert kms.counts["kmip"] == 3  # and each answer, echo included, came back
    for secret in ("s3cr3t-good-5e1", "s3cr3t-echoed-8b2", "tok-3f9a0c", "object bytes"):
        assert secret not in result.output


# -- the fake is as strict as the KMS -----------------------------------------------------------


def test_the_fake_answers_only_the_exact_get_shape(cosmian_plain_fake: CosmianFake) -> None:
    fake = cosmian_plain_fake
    uid = fake.put_secret_data(b"x")
    url = f"{fake.url}/kmip/2_1"
    assert requests.post(url, json=get_request(uid), timeout=5).status_code == 200
    assert requests.get(url, timeout=5).status_code == 405
    assert (
        requests.post(url, data="{}", headers={"Content-Type": "text/plain"}, timeout=5).status_code
        == 400
    )
    wrapped = get_request(uid)
    wrapped["value"][1]["value"] = "NotWrapped"
    assert requests.post(url, json=wrapped, timeout=5).status_code == 422
    assert requests.post(url, json=get_request("unknown"), timeout=5).status_code == 422
    fake.echo_secrets = True
    assert "object bytes: x" in requests.post(url, json=get_request("unknown"), timeout=5).text
    fake.token = "t"
    assert requests.post(url, json=get_request(uid), timeout=5).status_code == 401
    authorized = requests.post(
        url, json=get_request(uid), headers={"Authorization": "Bearer t"}, timeout=5
    )
    assert authorized.status_code == 200
