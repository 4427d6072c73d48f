"""The aws-sm backend against moto's real server, end to end through the launcher; and what both
AWS backends share (launcher/backends/_aws.py): credential files, endpoints, hostile answers."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Launch, served
from tests.servers.fault_proxy import FaultProxy
from tests.servers.moto_ssm import ACCESS_KEY, REGION, SECRET_KEY, MotoServer

BATCH_GET = "secretsmanager.BatchGetSecretValue"
GET = "secretsmanager.GetSecretValue"
KEYS = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
JSON_11 = {"Content-Type": "application/x-amz-json-1.1"}
RDS_NAME = "rds!db-3a8f1c8e-52d4-4c4e-9d0b-6f1e2a7b8c9d"  # how RDS names a secret it manages
RDS = {  # the shape RDS writes for a managed master user password
    "username": "kms_admin",
    "password": "rds-p4ss-9c1e",
    "host": "kms.cluster-abc.eu-west-1.rds.amazonaws.com",
    "port": 5432,
    "dbname": "kms",
}


@pytest.fixture(autouse=True)
def fresh(moto_ssm: MotoServer) -> MotoServer:
    moto_ssm.reset()
    return moto_ssm


@pytest.fixture
def sm(fresh: MotoServer) -> Any:
    """A Secrets Manager client of the moto server, to set up secrets."""
    return fresh.client(service="secretsmanager")


@pytest.fixture
def proxy(moto_ssm: MotoServer) -> Iterator[FaultProxy]:
    with FaultProxy.for_url(moto_ssm.url) as counting:
        yield counting


@pytest.fixture
def keys_env(proxy: FaultProxy) -> dict[str, str]:
    """Keys in the environment; both AWS services reached through the counting proxy."""
    return {
        "AWS_ENDPOINT_URL_SECRETS_MANAGER": proxy.url,
        "AWS_ENDPOINT_URL_SSM": proxy.url,
        "AWS_EC2_METADATA_DISABLED": "true",
        **KEYS,
    }


@pytest.fixture
def launch(
    run_launcher: Callable[..., Launch], write_config: Callable[[str], Path], keys_env: dict[str, str]
) -> Callable[..., Launch]:
    """launch(toml, env=None, *args, backend="aws-sm"): the environment defaults to keys_env."""

    def run(toml: str, env: dict[str, str] | None = None, *args: str, backend: str = "aws-sm") -> Launch:
        config = write_config(toml)
        return run_launcher("--backend", backend, "-c", str(config), *args, env=keys_env if env is None else env)

    return run


def error_answer(code: str, message: str = "") -> tuple[int, bytes, dict[str, str]]:
    """An AWS JSON 1.1 error answer as Secrets Manager sends it."""
    return 400, json.dumps({"__type": code, "Message": message}).encode(), JSON_11


def ref(name: str, suffix: str = "") -> str:
    return f"secret://{REGION}/{name}{suffix}"


# -- values -------------------------------------------------------------------------------------


def test_a_secret_string_is_delivered_whole(sm: Any, launch: Callable[..., Launch]) -> None:
    sm.create_secret(Name="prod/kms/db-password", SecretString="wh0le-string")
    assert served(launch(f'x = "{ref("prod/kms/db-password")}"\n'))["x"] == "wh0le-string"


def test_each_key_of_an_rds_secret_is_read_with_one_call(
    sm: Any, launch: Callable[..., Launch], proxy: FaultProxy
) -> None:
    sm.create_secret(Name=RDS_NAME, SecretString=json.dumps(RDS))
    rds = RDS_NAME.replace("!", "%21")  # '!' is outside the reference grammar
    toml = "".join(f'{key} = "{ref(rds, "#" + key)}"\n' for key in RDS)
    toml += f'url = "postgresql://{ref(rds, "#username")}:{ref(rds, "#password")}@db/kms"\n'
    parsed = served(launch(toml))
    assert {key: parsed[key] for key in RDS} == {**RDS, "port": "5432"}
    assert parsed["url"] == "postgresql://kms_admin:rds-p4ss-9c1e@db/kms"
    assert proxy.count() == 1


def test_a_json_number_is_delivered_as_written(sm: Any, launch: Callable[..., Launch]) -> None:
    sm.create_secret(Name="numbers", SecretString='{"port": 5432, "ratio": 0.10, "big": 1e3}')
    toml = "".join(f'{key} = "{ref("numbers", "#" + key)}"\n' for key in ("port", "ratio", "big"))
    assert served(launch(toml)) == {"port": "5432", "ratio": "0.10", "big": "1e3"}


def test_the_current_and_previous_stages_follow_a_rotation(sm: Any, launch: Callable[..., Launch]) -> None:
    sm.create_secret(Name="kms/rotated", SecretString="before-rotation")
    sm.put_secret_value(SecretId="kms/rotated", SecretString="after-rotation")
    toml = (
        f'default = "{ref("kms/rotated")}"\n'
        f'current = "{ref("kms/rotated", "?version=AWSCURRENT")}"\n'
        f'previous = "{ref("kms/rotated", "?version=AWSPREVIOUS")}"\n'
    )
    parsed = served(launch(toml))
    assert (parsed["default"], parsed["current"], parsed["previous"]) == (
        "after-rotation", "after-rotation", "before-rotation",
    )


def test_a_custom_stage_label_is_a_pin(sm: Any, launch: Callable[..., Launch]) -> None:
    first = sm.create_secret(Name="kms/staged", SecretString="labelled")["VersionId"]
    sm.put_secret_value(SecretId="kms/staged", SecretString="newer")
    sm.update_secret_version_stage(SecretId="kms/staged", VersionStage="stable", MoveToVersionId=first)
    assert served(launch(f'x = "{ref("kms/staged", "?version=stable")}"\n'))["x"] == "labelled"


def test_a_version_id_pin_reads_that_version(sm: Any, launch: Callable[..., Launch]) -> None:
    first = sm.create_secret(Name="kms/versions", SecretString="first")["VersionId"]
    sm.put_secret_value(SecretId="kms/versions", SecretString="second")
    sm.put_secret_value(SecretId="kms/versions", SecretString="third")
    assert served(launch(f'x = "{ref("kms/versions", "?version=" + first)}"\n'))["x"] == "first"


def test_check_shows_the_version_id_read(sm: Any, launch: Callable[..., Launch]) -> None:
    version = sm.create_secret(Name="kms/checked", SecretString="v")["VersionId"]
    result = launch(f'x = "{ref("kms/checked")}"\n', None, "--check")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"x\t{ref('kms/checked')}\tok\t1 bytes\tversion {version}\n"


def test_the_launch_record_holds_each_version_id_and_creation_time(
    sm: Any, launch: Callable[..., Launch], tmp_path: Path
) -> None:
    old = sm.create_secret(Name="kms/recorded", SecretString="old-value")["VersionId"]
    new = sm.put_secret_value(SecretId="kms/recorded", SecretString="new-value")["VersionId"]
    path = tmp_path / "launch-record.json"
    toml = f'now = "{ref("kms/recorded")}"\nbefore = "{ref("kms/recorded", "?version=AWSPREVIOUS")}"\n'
    served(launch(toml, None, "--record", str(path)))
    entries = {entry["keys"][0]: entry for entry in json.loads(path.read_text())["references"]}
    assert (entries["now"]["version"], entries["before"]["version"]) == (new, old)
    assert entries["now"]["created"] is not None
    assert "new-value" not in path.read_text()


def test_an_arn_written_with_percent_3a_is_read(sm: Any, launch: Callable[..., Launch]) -> None:
    arn = sm.create_secret(Name="prod/kms/by-arn", SecretString="via-arn")["ARN"]
    assert served(launch(f'x = "secret://{REGION}/{arn.replace(":", "%3A")}"\n'))["x"] == "via-arn"


def test_a_binary_secret_reaches_the_server_as_a_file_byte_exact(
    sm: Any, launch: Callable[..., Launch]
) -> None:
    blob = bytes(range(256)) * 4
    sm.create_secret(Name="kms/tls-p12", SecretBinary=blob)
    result = launch(f'[tls]\ntls_p12_file = "secret+file://{REGION}/kms/tls-p12"\n')
    path = served(result)["tls"]["tls_p12_file"]
    assert result.report is not None
    assert base64.b64decode(result.report["files"][path]["bytes_b64"]) == blob


@pytest.mark.parametrize("scheme", ["secret", "secret+file+base64"])
def test_a_binary_secret_outside_secret_file_is_65_with_a_hint(
    sm: Any, launch: Callable[..., Launch], scheme: str
) -> None:
    sm.create_secret(Name="kms/blob", SecretBinary=b"\x00\xffbinary")
    result = launch(f'x = "{scheme}://{REGION}/kms/blob"\n')
    assert result.returncode == 65
    assert "is binary (SecretBinary): deliver it with secret+file://" in result.stderr


def test_keys_are_read_from_the_credentials_directory(
    sm: Any, launch: Callable[..., Launch], proxy: FaultProxy, tmp_path: Path
) -> None:
    sm.create_secret(Name="kms/db", SecretString="via-credentials")
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "aws-access-key-id").write_text(ACCESS_KEY + "\n")
    (credentials / "aws-secret-access-key").write_text(SECRET_KEY + "\n")
    env = {
        "AWS_ENDPOINT_URL_SECRETS_MANAGER": proxy.url,
        "CREDENTIALS_DIRECTORY": str(credentials),
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    result = launch(f'x = "{ref("kms/db")}"\n', env)
    assert served(result)["x"] == "via-credentials"
    assert result.report is not None
    assert "CREDENTIALS_DIRECTORY" not in result.report["environ"]


# -- request counts -----------------------------------------------------------------------------


@pytest.mark.parametrize(("secrets", "calls"), [(1, 1), (20, 1), (21, 2), (100, 5)])
def test_current_versions_are_fetched_twenty_per_batch_call(
    sm: Any, launch: Callable[..., Launch], proxy: FaultProxy, secrets: int, calls: int
) -> None:
    for i in range(secrets):
        sm.create_secret(Name=f"kms/s{i}", SecretString=f"value-{i}")
    parsed = served(launch("".join(f'k{i} = "{ref(f"kms/s{i}")}"\n' for i in range(secrets))))
    assert [parsed[f"k{i}"] for i in range(secrets)] == [f"value-{i}" for i in range(secrets)]
    assert proxy.count(target=BATCH_GET) == calls
    assert proxy.count() == calls


def test_each_pinned_version_is_one_get_secret_value(
    sm: Any, launch: Callable[..., Launch], proxy: FaultProxy
) -> None:
    sm.create_secret(Name="kms/a", SecretString='{"user": "a-user", "password": "a-old"}')
    sm.put_secret_value(SecretId="kms/a", SecretString='{"user": "a-user", "password": "a-new"}')
    sm.create_secret(Name="kms/b", SecretString="b-current")
    toml = (
        f'new_user = "{ref("kms/a", "#user")}"\n'
        f'new_password = "{ref("kms/a", "#password")}"\n'
        f'old_user = "{ref("kms/a", "?version=AWSPREVIOUS#user")}"\n'
        f'old_password = "{ref("kms/a", "?version=AWSPREVIOUS#password")}"\n'
        f'b = "{ref("kms/b")}"\n'
    )
    assert served(launch(toml)) == {
        "new_user": "a-user", "new_password": "a-new", "old_user": "a-user", "old_password": "a-old",
        "b": "b-current",
    }
    # One batch for the current versions of kms/a and kms/b, one call for kms/a's AWSPREVIOUS.
    assert (proxy.count(target=BATCH_GET), proxy.count(target=GET), proxy.count()) == (1, 1, 2)


# -- failures -----------------------------------------------------------------------------------


def test_every_missing_secret_is_listed_with_65(sm: Any, launch: Callable[..., Launch]) -> None:
    sm.create_secret(Name="kms/present", SecretString="present-value")
    toml = f'present = "{ref("kms/present")}"\n'
    toml += "".join(f'm{i} = "{ref(f"kms/missing-{i}")}"\n' for i in range(3))
    result = launch(toml)
    assert result.returncode == 65
    assert result.stderr.splitlines() == [
        f"kms-launch: m{i}: {ref(f'kms/missing-{i}')}: Secrets Manager in {REGION}: no secret kms/missing-{i}"
        for i in range(3)
    ]
    assert "present-value" not in result.output


def test_a_missing_stage_is_65(sm: Any, launch: Callable[..., Launch]) -> None:
    sm.create_secret(Name="kms/db", SecretString="v")
    result = launch(f'x = "{ref("kms/db", "?version=AWSPREVIOUS")}"\n')
    assert result.returncode == 65
    assert "no version kms/db (version AWSPREVIOUS)" in result.stderr


def test_a_missing_key_is_65_and_shows_no_value(sm: Any, launch: Callable[..., Launch]) -> None:
    sm.create_secret(Name="rds/kms", SecretString=json.dumps(RDS))
    result = launch(f'x = "{ref("rds/kms", "#passwd")}"\n')
    assert result.returncode == 65
    assert f"kms-launch: x: {ref('rds/kms', '#passwd')}: secret rds/kms in {REGION} has no field 'passwd'" in result.stderr
    assert RDS["password"] not in result.output


ARN_ELSEWHERE = "arn%3Aaws%3Asecretsmanager%3Aus-east-1%3A123456789012%3Asecret%3Akms"


@pytest.mark.parametrize(
    ("reference", "reason"),
    [
        ("secret://kms/db", "'kms' is not an AWS region"),
        (f"secret://{REGION}", "expected secret://<region>/<secret-id>"),
        (f"secret://{REGION}/kms/db%20password", "not a secret name"),
        (f"secret://{REGION}/arn%3Anot-an-arn", "nor a Secrets Manager ARN (its ':' as %3A)"),
        (f"secret://{REGION}/{ARN_ELSEWHERE}", f"the ARN is in us-east-1, the reference in {REGION}"),
        (f"secret://{REGION}/kms/db?version=%20", "?version= takes a version id (a UUID) or a stage"),
        ("secret://sm.internal:443/kms/db", "this backend takes no host or port"),
    ],
)
def test_a_reference_malformed_for_secrets_manager_is_65_with_its_reason_before_any_request(
    launch: Callable[..., Launch], proxy: FaultProxy, reference: str, reason: str
) -> None:
    result = launch(f'x = "{reference}"\n')
    assert (result.returncode, proxy.count()) == (65, 0)
    assert result.stderr.startswith(f"kms-launch: x: {reference}: ")
    assert reason in result.stderr


def test_a_policy_without_batch_permission_falls_back_to_get_secret_value(
    sm: Any, launch: Callable[..., Launch], proxy: FaultProxy
) -> None:
    for i in range(3):
        sm.create_secret(Name=f"kms/s{i}", SecretString=f"value-{i}")
    proxy.answer(*error_answer("AccessDeniedException", "not authorized: BatchGetSecretValue"), target=BATCH_GET)
    parsed = served(launch("".join(f'k{i} = "{ref(f"kms/s{i}")}"\n' for i in range(3))))
    assert parsed == {f"k{i}": f"value-{i}" for i in range(3)}
    assert (proxy.count(target=BATCH_GET), proxy.count(target=GET)) == (1, 3)


def test_access_denied_is_77(sm: Any, launch: Callable[..., Launch], proxy: FaultProxy) -> None:
    sm.create_secret(Name="kms/db", SecretString="denied-value")
    proxy.answer(*error_answer("AccessDeniedException", "User is not authorized"))
    result = launch(f'x = "{ref("kms/db")}"\n')
    assert result.returncode == 77
    assert f"Secrets Manager in {REGION} refused the permission (AccessDeniedException)" in result.stderr
    assert "denied-value" not in result.output
    assert (proxy.count(target=BATCH_GET), proxy.count(target=GET)) == (1, 1)  # no retry


def test_refused_credentials_are_77_without_fallback_or_retry(
    launch: Callable[..., Launch], proxy: FaultProxy
) -> None:
    proxy.answer(*error_answer("UnrecognizedClientException", "The security token is invalid."))
    result = launch(f'x = "{ref("kms/db")}"\n')
    assert result.returncode == 77
    assert "refused the credentials (UnrecognizedClientException)" in result.stderr
    assert SECRET_KEY not in result.output
    assert proxy.count() == 1


def test_throttling_is_retried(sm: Any, launch: Callable[..., Launch], proxy: FaultProxy) -> None:
    sm.create_secret(Name="kms/db", SecretString="after-throttling")
    proxy.answer(*error_answer("ThrottlingException", "Rate exceeded"), times=2)
    assert served(launch(f'x = "{ref("kms/db")}"\n'))["x"] == "after-throttling"
    assert proxy.count(target=BATCH_GET) == 3


def test_persistent_throttling_is_69_by_the_deadline(
    launch: Callable[..., Launch], proxy: FaultProxy, ends_by_deadline: Callable[..., None]
) -> None:
    proxy.answer(*error_answer("ThrottlingException", "Rate exceeded"))
    result = launch(f'x = "{ref("kms/db")}"\n', None, "--timeout", "2")
    assert result.returncode == 69
    assert "ThrottlingException" in result.stderr
    ends_by_deadline(result, "aws-sm", 2)
    # Retried until the deadline (how often depends on the backoff's jitter and the machine).
    assert proxy.count(target=BATCH_GET) >= 2
    assert f"(gave up after {proxy.count(target=BATCH_GET)} attempts in " in result.stderr


# -- both AWS backends: credential files, endpoints, hostile answers (issue 10) ---------------

BACKENDS = ["aws-ssm", "aws-sm"]
ENDPOINT_OF = {"aws-ssm": "AWS_ENDPOINT_URL_SSM", "aws-sm": "AWS_ENDPOINT_URL_SECRETS_MANAGER"}
ANY_REF = f'x = "secret://{REGION}/kms/db"\n'


def fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def sparse(path: Path, size: int = 2 * 1024 * 1024) -> Path:
    with path.open("wb") as file:
        file.truncate(size)
    return path


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("variable", ["AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_CA_BUNDLE"])
@pytest.mark.parametrize("kind", ["fifo", "huge"])
def test_a_credential_file_that_is_a_fifo_or_huge_is_78_naming_its_variable(
    launch: Callable[..., Launch], keys_env: dict[str, str], proxy: FaultProxy, tmp_path: Path,
    backend: str, variable: str, kind: str,
) -> None:
    path = fifo(tmp_path / "file") if kind == "fifo" else sparse(tmp_path / "file")
    result = launch(ANY_REF, {**keys_env, variable: str(path)}, "--timeout", "20", backend=backend)
    assert result.returncode == 78, result.stderr
    why = {"fifo": "is a FIFO, socket or device, not a regular file", "huge": "is larger than 1 MiB"}
    assert f"{variable} ({path}): {why[kind]}\n" in result.stderr
    assert result.elapsed < 20
    assert proxy.count() == 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_fifo_at_the_default_credentials_file_is_78(
    launch: Callable[..., Launch], keys_env: dict[str, str], proxy: FaultProxy, tmp_path: Path, backend: str
) -> None:
    home = tmp_path / "home"  # clean_env's HOME
    (home / ".aws").mkdir(parents=True)
    fifo(home / ".aws" / "credentials")
    result = launch(ANY_REF, {**keys_env, "HOME": str(home)}, "--timeout", "20", backend=backend)
    assert result.returncode == 78
    assert "the AWS credentials file" in result.stderr
    assert proxy.count() == 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_web_identity_token_file_that_is_a_fifo_is_78(
    launch: Callable[..., Launch], proxy: FaultProxy, tmp_path: Path, backend: str
) -> None:
    token = fifo(tmp_path / "token")
    env = {
        ENDPOINT_OF[backend]: proxy.url,
        "AWS_ROLE_ARN": "arn:aws:iam::123456789012:role/kms",
        "AWS_WEB_IDENTITY_TOKEN_FILE": str(token),
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    result = launch(ANY_REF, env, "--timeout", "20", backend=backend)
    assert result.returncode == 78
    assert f"AWS_WEB_IDENTITY_TOKEN_FILE ({token}): is a FIFO" in result.stderr
    assert result.elapsed < 20
    assert proxy.count() == 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_missing_ca_bundle_is_78_naming_aws_ca_bundle(
    launch: Callable[..., Launch], keys_env: dict[str, str], tmp_path: Path, backend: str
) -> None:
    missing = tmp_path / "no-ca.pem"
    result = launch(ANY_REF, {**keys_env, "AWS_CA_BUNDLE": str(missing)}, backend=backend)
    assert result.returncode == 78
    assert f"AWS_CA_BUNDLE ({missing}): no such file, or empty" in result.stderr


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_secret_key_in_credentials_directory_that_is_not_utf8_is_78_unquoted(
    launch: Callable[..., Launch], proxy: FaultProxy, tmp_path: Path, backend: str
) -> None:
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "aws-access-key-id").write_text(ACCESS_KEY)
    (credentials / "aws-secret-access-key").write_bytes(b"k3y\xffwith-a-bad-byte")
    env = {ENDPOINT_OF[backend]: proxy.url, "CREDENTIALS_DIRECTORY": str(credentials)}
    result = launch(ANY_REF, env, backend=backend)
    assert result.returncode == 78
    assert "AWS_SECRET_ACCESS_KEY from $CREDENTIALS_DIRECTORY/aws-secret-access-key" in result.stderr
    assert "not UTF-8 text" in result.stderr
    assert "with-a-bad-byte" not in result.output
    assert "\\xff" not in result.output


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("variable", ["AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"])
def test_a_credential_a_header_cannot_carry_is_78_naming_its_variable(
    launch: Callable[..., Launch], keys_env: dict[str, str], proxy: FaultProxy, backend: str, variable: str
) -> None:
    result = launch(ANY_REF, {**keys_env, variable: "s3cr€t-unsendable"}, backend=backend)
    assert result.returncode == 78
    assert f"{variable} holds a character an HTTP header cannot carry" in result.stderr
    assert "unsendable" not in result.output
    assert proxy.count() == 0


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("generic", [True, False], ids=["AWS_ENDPOINT_URL", "service"])
@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("https://[::1", "is not a valid URL"),
        ("http://127.0.0.1:99999", "is not a valid URL"),
        ("http://127.0.0.1:port", "is not a valid URL"),
        ("ftp://127.0.0.1", "must be an http:// or https:// URL with a host"),
        ("127.0.0.1:4566", "must be an http:// or https:// URL with a host"),
        ("https://", "must be an http:// or https:// URL with a host"),
    ],
)
def test_a_malformed_endpoint_url_is_78_naming_its_variable(
    launch: Callable[..., Launch], backend: str, generic: bool, url: str, why: str
) -> None:
    variable = "AWS_ENDPOINT_URL" if generic else ENDPOINT_OF[backend]
    result = launch(ANY_REF, {**KEYS, variable: url, "AWS_EC2_METADATA_DISABLED": "true"}, backend=backend)
    assert result.returncode == 78
    assert f": {variable} {why}\n" in result.stderr


NOT_THE_SERVICE = "with a body that is not"
GARBAGE = [  # (status, body, exit code, what the line says)
    (200, b"[]", 69, NOT_THE_SERVICE),
    (200, b"null", 69, NOT_THE_SERVICE),
    (200, b'{"SecretValues": "x", "Parameters": "x"}', 69, NOT_THE_SERVICE),
    (200, b'{"SecretValues": [1, null], "Parameters": [1, null]}', 69, NOT_THE_SERVICE),
    (200, b'{"SecretValues": [{"Name": "kms/db", "CreatedDate": "yesterday"}],'
          b' "Parameters": [{"Name": "/kms/db", "Value": "v", "LastModifiedDate": "yesterday"}]}',
     69, NOT_THE_SERVICE),
    (200, b'{"SecretValues": [{"Name": "kms/db", "CreatedDate": 1e400}],'
          b' "Parameters": [{"Name": "/kms/db", "Value": "v", "LastModifiedDate": 1e400}]}',
     69, NOT_THE_SERVICE),
    (200, b"\xff\xfe not UTF-8", 69, NOT_THE_SERVICE),
    (200, b"<html><body>Welcome to nginx</body></html>", 69, NOT_THE_SERVICE),
    (200, b'{"SecretValues', 69, NOT_THE_SERVICE),
    (400, b"[1]", 69, NOT_THE_SERVICE),
    (400, b"<html>Bad Request</html>", 69, "answered 400"),
    (403, b"{}", 77, "answered HTTP 403: access refused"),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("status", "body", "code", "says"), GARBAGE)
def test_a_malformed_answer_is_classified_never_70(
    launch: Callable[..., Launch], proxy: FaultProxy, backend: str, status: int, body: bytes,
    code: int, says: str,
) -> None:
    proxy.answer(status, body, JSON_11)
    result = launch(ANY_REF, None, "--timeout", "3", backend=backend)
    assert result.returncode == code, result.stderr
    assert says in result.stderr
    assert "Traceback" not in result.output
    assert "nginx" not in result.output
    assert proxy.count() == 1  # none of these is retried


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_error_page_with_5xx_is_retried_then_69(
    launch: Callable[..., Launch], proxy: FaultProxy, backend: str, ends_by_deadline: Callable[..., None]
) -> None:
    proxy.answer(502, b"\xff\xfe<html>Bad Gateway</html>", {"Content-Type": "text/html"})
    result = launch(ANY_REF, None, "--timeout", "2", backend=backend)
    assert result.returncode == 69
    assert "Traceback" not in result.output
    assert proxy.count() > 1
    ends_by_deadline(result, backend, 2)

