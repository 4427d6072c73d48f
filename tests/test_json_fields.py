"""#field on a backend without native fields: a top-level key of a value that is a JSON object.
The rule (launcher/backends/_json.py) directly, then end to end through SSM parameters on moto;
vault keeps its native fields."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pytest

from launcher.backends._json import json_field
from launcher.errors import BadSecretValue, LaunchError, SecretNotFound
from tests.conftest import Launch, served
from tests.servers.fault_proxy import FaultProxy
from tests.servers.moto_ssm import ACCESS_KEY, REGION, SECRET_KEY, MotoServer
from tests.servers.openbao import OpenBao

Launcher = Callable[..., Launch]
DOCUMENT = {
    "username": "kms",
    "password": 's3cr3t-p@ss "quoted" é',
    "port": 5432,
    "ratio": 0.10,
    "enabled": True,
    "nothing": None,
    "nested": {"inner": "hidden-inner"},
    "list": ["hidden-item"],
}
# Written by hand: json.dumps would rewrite 0.10 as 0.1 and 1e3 as 1000.0.
WRITTEN = (
    '{"username": "kms", "password": "s3cr3t-p@ss \\"quoted\\" \\u00e9", "port": 5432,'
    ' "ratio": 0.10, "big": 1e3, "enabled": true, "nothing": null,'
    ' "nested": {"inner": "hidden-inner"}, "list": ["hidden-item"]}'
)
GET_PARAMETERS = "AmazonSSM.GetParameters"


def field_of(value: str | bytes, field: str) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return json_field(data, field, ref="secret://x/y#" + field, where="the parameter")


def failure(value: str | bytes, field: str) -> LaunchError:
    with pytest.raises(LaunchError) as caught:
        field_of(value, field)
    return caught.value


# -- the rule -----------------------------------------------------------------------------------


def test_a_string_gives_its_text() -> None:
    assert field_of(WRITTEN, "password") == DOCUMENT["password"].encode()  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("field", "text"), [("port", b"5432"), ("ratio", b"0.10"), ("big", b"1e3")]
)
def test_a_number_gives_its_text_as_written(field: str, text: bytes) -> None:
    assert field_of(WRITTEN, field) == text


def test_a_missing_key_is_not_found() -> None:
    error = failure(WRITTEN, "passwd")
    assert isinstance(error, SecretNotFound)
    assert error.exit_code == 65
    assert "'passwd'" in error.message


@pytest.mark.parametrize(
    ("field", "kind"),
    [("enabled", "boolean"), ("nothing", "null"), ("nested", "object"), ("list", "array")],
)
def test_other_json_types_are_bad_values_named_by_type_never_quoted(field: str, kind: str) -> None:
    error = failure(WRITTEN, field)
    assert isinstance(error, BadSecretValue)
    assert error.exit_code == 65
    assert f"a JSON {kind}" in error.message
    assert "hidden" not in error.message
    assert "true" not in error.message


@pytest.mark.parametrize(
    ("value", "kind"), [('["a", "b"]', "array"), ('"just-text"', "string"), ("42", "number")]
)
def test_a_value_that_is_json_but_no_object_is_a_bad_value(value: str, kind: str) -> None:
    error = failure(value, "password")
    assert isinstance(error, BadSecretValue)
    assert f"a JSON {kind}, not an object" in error.message
    assert "just-text" not in error.message


@pytest.mark.parametrize("value", ["plain-secret-text", '{"password": "cut', b"\xff\xfe", ""])
def test_a_value_that_is_not_json_is_a_bad_value_never_quoted(value: str | bytes) -> None:
    error = failure(value, "password")
    assert isinstance(error, BadSecretValue)
    assert "not JSON" in error.message
    assert "plain-secret" not in error.message
    assert "cut" not in error.message


def test_only_top_level_keys_are_fields() -> None:
    assert isinstance(failure(WRITTEN, "inner"), SecretNotFound)


# -- end to end: SSM parameters holding JSON ----------------------------------------------------


@pytest.fixture
def ssm(aws_ssm_store: object, moto_ssm: MotoServer) -> MotoServer:
    moto_ssm.reset()
    moto_ssm.put("/kms/db", WRITTEN)
    return moto_ssm


@pytest.fixture
def proxy(moto_ssm: MotoServer) -> Iterator[FaultProxy]:
    with FaultProxy.for_url(moto_ssm.url) as counting:
        yield counting


@pytest.fixture
def launch(launch_backend: Callable[..., Launcher], proxy: FaultProxy) -> Launcher:
    env = {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_ENDPOINT_URL_SSM": proxy.url,
    }
    return launch_backend("aws-ssm", env)


def test_ssm_fields_of_one_parameter_are_read_with_one_call(
    ssm: MotoServer, launch: Launcher, proxy: FaultProxy
) -> None:
    toml = (
        f'user = "secret://{REGION}/kms/db#username"\n'
        f'password = "secret://{REGION}/kms/db#password"\n'
        f'url = "postgresql://secret://{REGION}/kms/db#username@db.internal:secret://{REGION}/kms/db#port/kms"\n'
    )
    parsed = served(launch(toml))
    assert parsed == {
        "user": "kms",
        "password": DOCUMENT["password"],
        "url": "postgresql://kms@db.internal:5432/kms",
    }
    assert proxy.count(target=GET_PARAMETERS) == 1


def test_ssm_whole_parameter_without_field_is_the_json_text(
    ssm: MotoServer, launch: Launcher
) -> None:
    assert served(launch(f'doc = "secret://{REGION}/kms/db"\n'))["doc"] == WRITTEN


def test_ssm_field_combines_with_pin_and_encoding(ssm: MotoServer, launch: Launcher) -> None:
    ssm.put("/kms/db", json.dumps({"password": "rotated"}))  # version 2
    toml = f'url = "postgresql://kms:secret+url://{REGION}/kms/db?version=1#password@db.internal:5432/kms"\n'
    url = served(launch(toml))["url"]
    assert url == "postgresql://kms:s3cr3t-p%40ss%20%22quoted%22%20%C3%A9@db.internal:5432/kms"


def test_ssm_missing_field_exits_65_naming_key_reference_and_field(
    ssm: MotoServer, launch: Launcher
) -> None:
    result = launch(f'[db]\npassword = "secret://{REGION}/kms/db#passwd"\n')
    assert result.returncode == 65
    assert "db.password" in result.stderr
    assert f"secret://{REGION}/kms/db#passwd" in result.stderr
    assert "no field 'passwd'" in result.stderr
    assert "s3cr3t" not in result.output


def test_ssm_field_of_a_non_json_parameter_exits_65_without_the_value(
    ssm: MotoServer, launch: Launcher
) -> None:
    ssm.put("/kms/plain", "plain-secret-value")
    result = launch(f'password = "secret://{REGION}/kms/plain#password"\n')
    assert result.returncode == 65
    assert "not JSON" in result.stderr
    assert "plain-secret-value" not in result.output


def test_ssm_field_holding_an_object_exits_65_without_the_value(
    ssm: MotoServer, launch: Launcher
) -> None:
    result = launch(f'x = "secret://{REGION}/kms/db#nested"\n')
    assert result.returncode == 65
    assert "a JSON object" in result.stderr
    assert "hidden-inner" not in result.output


def test_ssm_check_shows_field_reference_with_its_version(
    ssm: MotoServer, launch: Launcher
) -> None:
    result = launch(f'password = "secret://{REGION}/kms/db#password"\n', None, "--check")
    assert result.returncode == 0, result.stderr
    length = len(DOCUMENT["password"].encode())  # type: ignore[union-attr]
    assert (
        result.stdout
        == f"password\tsecret://{REGION}/kms/db#password\tok\t{length} bytes\tversion 1\n"
    )


# -- vault keeps native fields ------------------------------------------------------------------


def test_vault_field_holding_json_text_is_delivered_verbatim(
    openbao: OpenBao, launch_backend: Callable[..., Launcher]
) -> None:
    openbao.put("json/db", value='{"password": "inner"}')
    launch = launch_backend("vault", {"VAULT_ADDR": openbao.url, "VAULT_TOKEN": openbao.token})
    assert served(launch('v = "secret://secret/json/db#value"\n'))["v"] == '{"password": "inner"}'


def test_vault_field_is_not_looked_up_inside_json_text(
    openbao: OpenBao, launch_backend: Callable[..., Launcher]
) -> None:
    openbao.put("json/db", value='{"password": "inner"}')
    launch = launch_backend("vault", {"VAULT_ADDR": openbao.url, "VAULT_TOKEN": openbao.token})
    result = launch('v = "secret://secret/json/db#password"\n')
    assert result.returncode == 65
    assert "no field 'password'" in result.stderr
