"""The aws-ssm backend against moto's real server, end to end through the launcher."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import certifi
import pytest

from tests.conftest import Launch, served, silent_listener
from tests.servers.fault_proxy import FaultProxy
from tests.servers.gate import InFlightGate
from tests.servers.moto_ssm import ACCESS_KEY, REGION, SECRET_KEY, MotoServer
from tests.servers.openbao import OpenBao

GET_PARAMETERS = "AmazonSSM.GetParameters"
KEYS = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
# No instance-metadata probe: nothing else could answer for credentials.
NO_IMDS = {"AWS_EC2_METADATA_DISABLED": "true"}


@pytest.fixture(autouse=True)
def fresh(moto_ssm: MotoServer) -> MotoServer:
    moto_ssm.reset()
    return moto_ssm


@pytest.fixture
def proxy(moto_ssm: MotoServer) -> Iterator[FaultProxy]:
    with FaultProxy.for_url(moto_ssm.url) as counting:
        yield counting


@pytest.fixture
def keys_env(proxy: FaultProxy) -> dict[str, str]:
    """Keys in the environment, SSM reached through the counting proxy."""
    return {"AWS_ENDPOINT_URL_SSM": proxy.url, **KEYS}


@pytest.fixture
def launch(launch_backend: Callable[..., Callable[..., Launch]], keys_env: dict[str, str]) -> Callable[..., Launch]:
    """Run the launcher with --backend aws-ssm on a config; the environment defaults to keys_env."""
    return launch_backend("aws-ssm", keys_env)


def access_keys(proxy: FaultProxy) -> set[str]:
    """The access key IDs that signed the GetParameters calls (SigV4: Credential=AKID/date/...)."""
    return {
        seen.headers["authorization"].split("Credential=", 1)[1].split("/", 1)[0]
        for seen in proxy.requests
        if seen.target == GET_PARAMETERS
    }


def throttled() -> tuple[int, bytes, dict[str, str]]:
    """SSM's answer when the account's request rate is exceeded (awsJson1_1 error shape)."""
    body = json.dumps({"__type": "ThrottlingException", "message": "Rate exceeded"}).encode()
    return 400, body, {"Content-Type": "application/x-amz-json-1.1"}


# -- values -------------------------------------------------------------------------------------


def test_a_secure_string_is_delivered_decrypted(fresh: MotoServer, launch: Callable[..., Launch]) -> None:
    fresh.put("/kms/db/password", "pl41n-text")
    parsed = served(launch(f'[db]\ndatabase_url = "secret://{REGION}/kms/db/password"\n'))
    # Without WithDecryption moto answers "kms:alias/aws/ssm:pl41n-text".
    assert parsed["db"]["database_url"] == "pl41n-text"


def test_an_embedded_reference_keeps_the_text_around_it(fresh: MotoServer, launch: Callable[..., Launch]) -> None:
    fresh.put("/kms/db", "p4ss")
    toml = f'[db]\ndatabase_url = "postgresql://kms:secret://{REGION}/kms/db@db.internal:5432/kms"\n'
    assert served(launch(toml))["db"]["database_url"] == "postgresql://kms:p4ss@db.internal:5432/kms"


@pytest.mark.parametrize(("names", "calls"), [(1, 1), (10, 1), (11, 2), (25, 3)])
def test_names_are_fetched_ten_per_get_parameters_call(
    fresh: MotoServer, launch: Callable[..., Launch], proxy: FaultProxy, names: int, calls: int
) -> None:
    for i in range(names):
        fresh.put(f"/kms/p{i}", f"value-{i}")
    parsed = served(launch("".join(f'k{i} = "secret://{REGION}/kms/p{i}"\n' for i in range(names))))
    assert [parsed[f"k{i}"] for i in range(names)] == [f"value-{i}" for i in range(names)]
    assert proxy.count(target=GET_PARAMETERS) == calls
    assert proxy.count() == calls


def test_each_region_is_asked_for_its_own_names(fresh: MotoServer, launch: Callable[..., Launch]) -> None:
    fresh.put("/kms/db", "from-ireland", region="eu-west-1")
    fresh.put("/kms/db", "from-virginia", region="us-east-1")
    fresh.put("/kms/only-frankfurt", "from-frankfurt", region="eu-central-1")
    toml = (
        'ie = "secret://eu-west-1/kms/db"\n'
        'us = "secret://us-east-1/kms/db"\n'
        'de = "secret://eu-central-1/kms/only-frankfurt"\n'
    )
    parsed = served(launch(toml))
    assert (parsed["ie"], parsed["us"], parsed["de"]) == ("from-ireland", "from-virginia", "from-frankfurt")


def test_a_version_selector_is_written_as_percent_3a(
    fresh: MotoServer, launch: Callable[..., Launch], proxy: FaultProxy
) -> None:
    fresh.put("/kms/db", "version-one")
    fresh.put("/kms/db", "version-two")
    fresh.put("/kms/other", "other")
    toml = (
        f'old = "secret://{REGION}/kms/db%3A1"\n'
        f'other = "secret://{REGION}/kms/other"\n'
        f'new = "secret://{REGION}/kms/db"\n'
    )
    parsed = served(launch(toml))
    assert (parsed["old"], parsed["other"], parsed["new"]) == ("version-one", "other", "version-two")
    # /kms/db and /kms/db:1 never share a call (the answer names both /kms/db); /kms/other may.
    assert proxy.count(target=GET_PARAMETERS) == 2


def test_a_label_selector_is_written_as_percent_3a(fresh: MotoServer, launch: Callable[..., Launch]) -> None:
    fresh.put("/kms/db", "labelled")
    fresh.put("/kms/db", "latest")
    fresh.client().label_parameter_version(Name="/kms/db", ParameterVersion=1, Labels=["stable"])
    assert served(launch(f'x = "secret://{REGION}/kms/db%3Astable"\n'))["x"] == "labelled"


def test_keys_are_read_from_the_credentials_directory(
    fresh: MotoServer, launch: Callable[..., Launch], proxy: FaultProxy, tmp_path: Path
) -> None:
    fresh.put("/kms/db", "via-credentials")
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "aws-access-key-id").write_text(ACCESS_KEY + "\n")
    (credentials / "aws-secret-access-key").write_text(SECRET_KEY + "\n")
    env = {"AWS_ENDPOINT_URL_SSM": proxy.url, "CREDENTIALS_DIRECTORY": str(credentials), "AWS_EC2_METADATA_DISABLED": "true"}
    assert served(launch(f'x = "secret://{REGION}/kms/db"\n', env))["x"] == "via-credentials"


def test_credentials_are_scrubbed_from_the_server_environment(
    fresh: MotoServer, launch: Callable[..., Launch], keys_env: dict[str, str]
) -> None:
    fresh.put("/kms/db", "v")
    result = launch(f'x = "secret://{REGION}/kms/db"\n', {**keys_env, "AWS_SESSION_TOKEN": "session-token-value"})
    served(result)
    assert result.report is not None
    environ = result.report["environ"]
    assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"} & set(environ)
    assert environ["AWS_ENDPOINT_URL_SSM"] == keys_env["AWS_ENDPOINT_URL_SSM"]


def test_throttling_is_retried(fresh: MotoServer, launch: Callable[..., Launch], proxy: FaultProxy) -> None:
    fresh.put("/kms/db", "after-throttling")
    status, body, headers = throttled()
    proxy.answer(status, body, headers, times=2)
    assert served(launch(f'x = "secret://{REGION}/kms/db"\n'))["x"] == "after-throttling"
    assert proxy.count(target=GET_PARAMETERS) == 3


# -- failures -----------------------------------------------------------------------------------


def test_every_missing_name_is_listed_with_65(fresh: MotoServer, launch: Callable[..., Launch]) -> None:
    fresh.put("/kms/present", "present-value")
    # Twelve names: the misses fall in two different GetParameters calls.
    toml = f'present = "secret://{REGION}/kms/present"\n'
    toml += "".join(f'm{i} = "secret://{REGION}/kms/missing-{i}"\n' for i in range(11))
    result = launch(toml)
    assert result.returncode == 65
    assert result.report is None
    lines = result.stderr.splitlines()
    assert lines == [
        f"kms-launch: m{i}: secret://{REGION}/kms/missing-{i}: no parameter /kms/missing-{i} in {REGION}"
        for i in range(11)
    ]
    assert "present-value" not in result.output


@pytest.mark.parametrize(
    "reference",
    [
        "secret://kms/db/password",  # no region
        f"secret://{REGION}",  # no name
        f"secret://{REGION}/kms/db%20password",  # outside AWS's name alphabet
        "secret://ssm.internal:443/kms/db",  # a host
    ],
)
def test_a_reference_malformed_for_ssm_is_65_before_any_request(
    launch: Callable[..., Launch], proxy: FaultProxy, reference: str
) -> None:
    result = launch(f'x = "{reference}"\n')
    assert result.returncode == 65
    assert f"kms-launch: x: {reference}: " in result.stderr
    assert proxy.count() == 0


def test_refused_credentials_are_77_without_retry(launch: Callable[..., Launch], proxy: FaultProxy) -> None:
    # moto accepts any keys, so the proxy answers as SSM does for an unknown access key.
    body = json.dumps({"__type": "UnrecognizedClientException", "message": "The security token is invalid."})
    proxy.answer(400, body.encode(), {"Content-Type": "application/x-amz-json-1.1"})
    result = launch(f'x = "secret://{REGION}/kms/db"\n')
    assert result.returncode == 77
    assert "UnrecognizedClientException" in result.stderr
    assert SECRET_KEY not in result.output
    assert proxy.count(target=GET_PARAMETERS) == 1


def test_persistent_throttling_is_69_within_the_deadline(
    launch: Callable[..., Launch], proxy: FaultProxy, ends_by_deadline, attempts_deadline
) -> None:
    proxy.answer(*throttled())
    timeout = attempts_deadline("aws-ssm")
    result = launch(f'x = "secret://{REGION}/kms/db"\n', None, "--timeout", timeout)
    assert result.returncode == 69
    # What SSM answered is named, whichever attempt the deadline happened to cut short.
    assert result.stderr.startswith(f"kms-launch: x: secret://{REGION}/kms/db: ")
    assert "ThrottlingException" in result.stderr
    ends_by_deadline(result, "aws-ssm", float(timeout))
    assert proxy.count(target=GET_PARAMETERS) > 3  # kept trying, not botocore's three attempts


def test_an_endpoint_that_never_answers_is_69_within_the_deadline(
    launch: Callable[..., Launch], ends_by_deadline
) -> None:
    with silent_listener() as url:
        result = launch(f'x = "secret://{REGION}/kms/db"\n', {"AWS_ENDPOINT_URL_SSM": url, **KEYS}, "--timeout", "1")
    assert result.returncode == 69
    assert result.stderr.startswith(f"kms-launch: x: secret://{REGION}/kms/db: ")
    assert re.search(r"\bno\b.*\banswer\b", result.stderr)
    ends_by_deadline(result, "aws-ssm", 1)


def test_no_credentials_at_all_is_78_with_a_hint(launch: Callable[..., Launch], proxy: FaultProxy) -> None:
    env = {"AWS_ENDPOINT_URL_SSM": proxy.url, "AWS_EC2_METADATA_DISABLED": "true"}
    result = launch(f'x = "secret://{REGION}/kms/db"\n', env)
    assert result.returncode == 78
    assert "no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY" in result.stderr
    assert proxy.count() == 0


def test_an_untrusted_certificate_is_69_at_once_with_a_hint(
    openbao_tls: OpenBao, launch: Callable[..., Launch]
) -> None:
    # Any HTTPS server with a private CA shows whether the TLS check happens before any request.
    env = {"AWS_ENDPOINT_URL_SSM": openbao_tls.url, "AWS_CA_BUNDLE": certifi.where(), **KEYS}
    result = launch(f'x = "secret://{REGION}/kms/db"\n', env, "--timeout", "20")
    assert result.returncode == 69
    assert "failed verification: set AWS_CA_BUNDLE" in result.stderr
    assert "gave up after" not in result.stderr  # final: one attempt, no retry
    assert result.elapsed < 20  # not retried until the deadline


def test_an_aws_ca_bundle_that_does_not_exist_is_78_before_any_request(
    openbao_tls: OpenBao, launch: Callable[..., Launch], tmp_path: Path
) -> None:
    missing = tmp_path / "no-ca.pem"
    env = {"AWS_ENDPOINT_URL_SSM": openbao_tls.url, "AWS_CA_BUNDLE": str(missing), **KEYS}
    result = launch(f'x = "secret://{REGION}/kms/db"\n', env, "--timeout", "20")
    assert result.returncode == 78
    assert f"AWS_CA_BUNDLE ({missing}): no such file, or empty" in result.stderr
    assert result.elapsed < 20  # a configuration error: never retried


def test_aws_ca_bundle_is_the_ca_botocore_trusts(openbao_tls: OpenBao, launch: Callable[..., Launch]) -> None:
    assert openbao_tls.ca is not None
    env = {"AWS_ENDPOINT_URL_SSM": openbao_tls.url, "AWS_CA_BUNDLE": openbao_tls.ca, **KEYS}
    result = launch(f'x = "secret://{REGION}/kms/db"\n', env, "--timeout", "5")
    # The handshake succeeds; OpenBao then answers an SSM call with a redirect to its UI, and
    # the launch fails naming where that pointed, not the certificate.
    assert result.returncode == 69, result.stderr
    assert result.report is None
    assert "failed verification" not in result.stderr
    assert f"kms-launch: x: secret://{REGION}/kms/db: SSM in {REGION} redirected to {openbao_tls.url}/ui/" in result.stderr


# -- concurrency, and where credentials and the endpoint come from -------------------------------


def test_batches_are_sent_concurrently(fresh: MotoServer, launch: Callable[..., Launch], proxy: FaultProxy) -> None:
    for i in range(25):
        fresh.put(f"/kms/c{i}", f"value-{i}")
    proxy.gate = InFlightGate(3)  # no call is answered until all three batches are asked at once
    parsed = served(launch("".join(f'k{i} = "secret://{REGION}/kms/c{i}"\n' for i in range(25))))
    assert [parsed[f"k{i}"] for i in range(25)] == [f"value-{i}" for i in range(25)]
    assert proxy.gate.peak == 3
    assert proxy.count(target=GET_PARAMETERS) == 3


def test_aws_profile_selects_keys_from_the_shared_credentials_file(
    fresh: MotoServer, launch: Callable[..., Launch], proxy: FaultProxy, clean_env: dict[str, str]
) -> None:
    fresh.put("/kms/db", "via-profile")
    aws = Path(clean_env["HOME"], ".aws")
    aws.mkdir()
    (aws / "credentials").write_text(
        "[default]\naws_access_key_id = AKIDDEFAULTPROFILE\naws_secret_access_key = default-secret\n"
        "[kms]\naws_access_key_id = AKIDKMSPROFILE\naws_secret_access_key = kms-profile-secret\n"
    )
    env = {"AWS_ENDPOINT_URL_SSM": proxy.url, "AWS_PROFILE": "kms", **NO_IMDS}
    assert served(launch(f'x = "secret://{REGION}/kms/db"\n', env))["x"] == "via-profile"
    assert access_keys(proxy) == {"AKIDKMSPROFILE"}


def test_an_unknown_aws_profile_is_78_before_any_request(launch: Callable[..., Launch], proxy: FaultProxy) -> None:
    env = {"AWS_ENDPOINT_URL_SSM": proxy.url, "AWS_PROFILE": "no-such-profile", **NO_IMDS}
    result = launch(f'x = "secret://{REGION}/kms/db"\n', env)
    assert result.returncode == 78
    assert "no-such-profile" in result.stderr
    assert proxy.count() == 0


def test_a_web_identity_token_file_is_exchanged_for_role_credentials(
    fresh: MotoServer, launch: Callable[..., Launch], proxy: FaultProxy, tmp_path: Path
) -> None:
    fresh.put("/kms/db", "via-web-identity")
    token = tmp_path / "web-identity-token"
    token.write_text("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6a21zIn0.c2ln")
    env = {
        "AWS_ENDPOINT_URL_SSM": proxy.url,
        "AWS_ENDPOINT_URL_STS": proxy.url,  # moto answers STS on the same server
        "AWS_ROLE_ARN": "arn:aws:iam::123456789012:role/kms-launch",
        "AWS_WEB_IDENTITY_TOKEN_FILE": str(token),
        "AWS_ROLE_SESSION_NAME": "kms-launch-test",
        **NO_IMDS,
    }
    assert served(launch(f'x = "secret://{REGION}/kms/db"\n', env))["x"] == "via-web-identity"
    exchanges = [seen for seen in proxy.requests if b"Action=AssumeRoleWithWebIdentity" in seen.body]
    assert len(exchanges) == 1
    [key] = access_keys(proxy)
    assert key.startswith("ASIA")  # temporary credentials from STS, not keys of ours
    calls = [seen for seen in proxy.requests if seen.target == GET_PARAMETERS]
    assert calls
    assert all(seen.headers.get("x-amz-security-token") for seen in calls)


def test_plain_aws_endpoint_url_is_the_endpoint(
    fresh: MotoServer, launch: Callable[..., Launch], proxy: FaultProxy
) -> None:
    fresh.put("/kms/db", "via-aws-endpoint-url")
    env = {"AWS_ENDPOINT_URL": proxy.url, **KEYS}
    assert served(launch(f'x = "secret://{REGION}/kms/db"\n', env))["x"] == "via-aws-endpoint-url"
    assert proxy.count(target=GET_PARAMETERS) == 1


def test_the_session_token_is_read_from_the_credentials_directory(
    fresh: MotoServer, launch: Callable[..., Launch], proxy: FaultProxy, tmp_path: Path
) -> None:
    fresh.put("/kms/db", "via-session-token")
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "aws-access-key-id").write_text("ASIATEMPORARYKEY\n")
    (credentials / "aws-secret-access-key").write_text(SECRET_KEY + "\n")
    (credentials / "aws-session-token").write_text("session-token-from-systemd\n")
    env = {"AWS_ENDPOINT_URL_SSM": proxy.url, "CREDENTIALS_DIRECTORY": str(credentials), **NO_IMDS}
    result = launch(f'x = "secret://{REGION}/kms/db"\n', env)
    assert served(result)["x"] == "via-session-token"
    [call] = [seen for seen in proxy.requests if seen.target == GET_PARAMETERS]
    assert call.headers["x-amz-security-token"] == "session-token-from-systemd"
    assert access_keys(proxy) == {"ASIATEMPORARYKEY"}
    assert "session-token-from-systemd" not in result.output
