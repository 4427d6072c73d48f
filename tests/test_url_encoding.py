"""secret+url:// substitutes a value percent-encoded for any part of a URL; --check warns when a
plain secret:// value would break the URL authority it sits in. Properties use independent
oracles: references built from their components, URLs taken apart by urllib.parse."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from launcher import launch, refs
from launcher.errors import BadSecretValue, Failures
from tests.conftest import Launch, served
from tests.servers.azure_fake import DEFAULT_VAULT, AzureFake
from tests.servers.cosmian_fake import CosmianFake
from tests.servers.moto_ssm import ACCESS_KEY, REGION, SECRET_KEY, MotoServer
from tests.servers.openbao import OpenBao

Launcher = Callable[..., Launch]
HOSTILE = "p@ss/w:rd?#%25 é&x=1[]"  # every delimiter of every URL part, a space and non-ASCII
ENCODED = "p%40ss%2Fw%3Ard%3F%23%2525%20%C3%A9%26x%3D1%5B%5D"
PERCENT_ENCODED = re.compile(r"(?:[A-Za-z0-9._~-]|%[0-9A-F]{2})*")


def password_of(url: str) -> str:
    parts = urlsplit(url)
    assert (parts.hostname, parts.port, parts.path) == ("db.internal", 5432, "/kms"), url
    return unquote(parts.password or "")


# -- the encoding -------------------------------------------------------------------------------


def test_every_delimiter_is_encoded_and_unreserved_characters_are_kept() -> None:
    assert launch.url_encode(HOSTILE) == ENCODED
    assert launch.url_encode("AZaz09-._~") == "AZaz09-._~"


@given(st.text())
def test_the_encoding_uses_only_unreserved_characters_and_escapes(text: str) -> None:
    assert PERCENT_ENCODED.fullmatch(launch.url_encode(text))


@given(st.text())
def test_an_encoded_value_round_trips_through_userinfo_path_and_query(text: str) -> None:
    encoded = launch.url_encode(text)
    parts = urlsplit(
        f"postgresql://{encoded}:{encoded}@db.internal:5432/{encoded}?password={encoded}&sslmode=require"
    )
    assert (parts.hostname, parts.port) == ("db.internal", 5432)
    assert unquote(parts.username or "") == text
    assert unquote(parts.password or "") == text
    assert unquote(parts.path[1:]) == text
    query = parse_qs(parts.query, keep_blank_values=True)
    assert query == {"password": [text], "sslmode": ["require"]}


@given(st.text())
def test_deliver_substitutes_a_url_reference_encoded(text: str) -> None:
    ref = refs.parse("secret+url://secret/kms/db#password")
    assert launch.deliver({ref: text.encode("utf-8")}, {ref: "db"}) == {
        ref: launch.url_encode(text)
    }


def test_deliver_refuses_a_url_reference_that_is_not_utf8() -> None:
    ref = refs.parse("secret+url://secret/kms/db#password")
    with pytest.raises(Failures) as caught:
        launch.deliver({ref: b"\xff\xfe"}, {ref: "db"})
    assert [type(error) for error in caught.value.errors] == [BadSecretValue]


# -- the grammar: embedded references end where they should ---------------------------------------

components = st.text(min_size=1, max_size=12)
# Not '/', '?version=' or '#': those continue a reference by design.
SUFFIXES = ["@db.internal:5432/kms", "?sslmode=require", ":6379", "&x=1", ";x", '"', " ", ""]
PREFIXES = ["postgresql://kms:", "redis://", "https://h/cb?token=", "x=", ""]


def written(component: str) -> str:
    # '+' and '=' may stay raw in a segment; everything else outside the grammar is escaped.
    return quote(component, safe="+=")


@given(
    scheme=st.sampled_from([refs.VALUE, refs.URL]),
    host=components,
    path=st.lists(components, min_size=1, max_size=3),
    pin=st.none() | components,
    field=st.none() | components,
    prefix=st.sampled_from(PREFIXES),
    suffix=st.sampled_from(SUFFIXES),
)
def test_an_embedded_reference_parses_into_the_components_it_was_built_from(
    scheme: str,
    host: str,
    path: list[str],
    pin: str | None,
    field: str | None,
    prefix: str,
    suffix: str,
) -> None:
    reference = f"{scheme}://{written(host)}/" + "/".join(map(written, path))
    reference += "" if pin is None else f"?version={written(pin)}"
    reference += "" if field is None else f"#{written(field)}"
    text = prefix + reference + suffix
    [span] = refs.find(text)
    assert (span.start, span.end) == (len(prefix), len(prefix) + len(reference))
    ref = span.ref
    assert (ref.scheme, ref.host, ref.path, ref.version, ref.field) == (
        scheme,
        host,
        tuple(path),
        pin,
        field,
    )
    assert ref.port is None


@pytest.mark.parametrize("pin", [None, "3"])
@pytest.mark.parametrize("field", [None, "password"])
def test_the_headline_url_keeps_its_host_with_and_without_pin_and_field(
    pin: str | None, field: str | None
) -> None:
    reference = (
        "secret://secret/kms/db"
        + (f"?version={pin}" if pin else "")
        + (f"#{field}" if field else "")
    )
    [span] = refs.find(f"postgresql://kms:{reference}@db.internal:5432/kms")
    assert span.ref.text == reference
    assert (span.ref.version, span.ref.field) == (pin, field)


# -- the warning's judgement: no false "safe" -----------------------------------------------------


@given(st.text())
def test_a_password_judged_safe_substitutes_without_changing_the_url(value: str) -> None:
    if not refs.breaks_authority(value, "password"):
        assert password_of(f"postgresql://kms:{value}@db.internal:5432/kms") == value


@given(st.text())
def test_a_user_judged_safe_substitutes_without_changing_the_url(value: str) -> None:
    if not refs.breaks_authority(value, "user"):
        parts = urlsplit(f"postgresql://{value}:pw@db.internal:5432/kms")
        assert (parts.username, parts.password, parts.hostname) == (value, "pw", "db.internal")


@given(st.text())
def test_a_host_judged_safe_substitutes_without_changing_the_url(value: str) -> None:
    if not refs.breaks_authority(value, "host"):
        parts = urlsplit(f"redis://{value}/0")
        assert (parts.netloc, parts.path) == (value, "/0")


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("postgresql://kms:secret://a/pw@db/kms", ["password"]),
        ("postgresql://secret://a/user:secret://a/pw@db/kms", ["user", "password"]),
        ("redis://secret://a/host:6379", ["host"]),
        ("postgresql://kms:pw@secret://a/host/kms", ["host"]),
        ("https://h/path/secret://a/token", [None]),
        ("https://h/?token=secret://a/token", [None]),
        ("secret://a/token", [None]),
    ],
)
def test_the_authority_part_a_reference_sits_in(text: str, parts: list[str | None]) -> None:
    spans = list(refs.find(text))
    assert [refs.authority_part(text, spans, index) for index in range(len(spans))] == parts


# -- end to end, every backend ------------------------------------------------------------------


@pytest.fixture
def vault_launch(openbao: OpenBao, launch_backend: Callable[..., Launcher]) -> Launcher:
    openbao.put("url/db", password=HOSTILE, user="kms")
    return launch_backend("vault", {"VAULT_ADDR": openbao.url, "VAULT_TOKEN": openbao.token})


def test_vault_value_is_encoded_in_a_url(vault_launch: Launcher) -> None:
    parsed = served(
        vault_launch(
            'url = "postgresql://kms:secret+url://secret/url/db#password@db.internal:5432/kms"\n'
        )
    )
    assert parsed["url"] == f"postgresql://kms:{ENCODED}@db.internal:5432/kms"
    assert password_of(parsed["url"]) == HOSTILE


def test_a_whole_string_url_reference_is_the_encoded_value(vault_launch: Launcher) -> None:
    assert served(vault_launch('v = "secret+url://secret/url/db#password"\n'))["v"] == ENCODED


def test_pin_and_field_combine_with_encoding(openbao: OpenBao, vault_launch: Launcher) -> None:
    openbao.put("url/db", password="newer", user="kms")  # version 2; version 1 holds HOSTILE
    toml = 'url = "postgresql://kms:secret+url://secret/url/db?version=1#password@db.internal:5432/kms"\n'
    assert password_of(served(vault_launch(toml))["url"]) == HOSTILE


def test_ssm_value_is_encoded(
    aws_ssm_store: object, moto_ssm: MotoServer, launch_backend: Callable[..., Launcher]
) -> None:
    moto_ssm.put("/url/db", HOSTILE)
    env = {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_ENDPOINT_URL_SSM": moto_ssm.url,
    }
    toml = f'url = "postgresql://kms:secret+url://{REGION}/url/db@db.internal:5432/kms"\n'
    assert password_of(served(launch_backend("aws-ssm", env)(toml))["url"]) == HOSTILE


def test_azure_value_is_encoded(
    azure_fake: AzureFake, launch_backend: Callable[..., Launcher]
) -> None:
    azure_fake.put("url-db", HOSTILE)
    toml = f'url = "postgresql://kms:secret+url://{DEFAULT_VAULT}/secrets/url-db@db.internal:5432/kms"\n'
    assert (
        password_of(served(launch_backend("azure-kv", azure_fake.environ())(toml))["url"])
        == HOSTILE
    )


def test_cosmian_value_is_encoded(
    cosmian_fake: CosmianFake, launch_backend: Callable[..., Launcher]
) -> None:
    uid = cosmian_fake.put_secret_data(HOSTILE.encode())
    reference = cosmian_fake.ref(uid).replace("secret://", "secret+url://")
    toml = f'url = "postgresql://kms:{reference}@db.internal:5432/kms"\n'
    env = {"COSMIAN_KMS_CA_CERT": str(cosmian_fake.ca_path)}
    assert password_of(served(launch_backend("cosmian-kms", env)(toml))["url"]) == HOSTILE


def test_env_value_is_encoded(launch_backend: Callable[..., Launcher]) -> None:
    toml = 'url = "postgresql://kms:secret+url://DB_PASSWORD@db.internal:5432/kms"\n'
    assert (
        password_of(served(launch_backend("env", {"DB_PASSWORD": HOSTILE})(toml))["url"]) == HOSTILE
    )


def test_file_value_is_encoded_without_its_trailing_newline(
    secrets_dir: Path, launch_backend: Callable[..., Launcher]
) -> None:
    (secrets_dir / "db").write_text(HOSTILE + "\n")
    toml = 'url = "postgresql://kms:secret+url://db@db.internal:5432/kms"\n'
    parsed = served(launch_backend("file", {"KMS_SECRETS_DIR": str(secrets_dir)})(toml))
    assert parsed["url"] == f"postgresql://kms:{ENCODED}@db.internal:5432/kms"


def test_a_value_that_is_not_utf8_is_refused_with_65_and_not_shown(
    secrets_dir: Path, launch_backend: Callable[..., Launcher]
) -> None:
    (secrets_dir / "db").write_bytes(b"\xffsecret-bytes\xfe")
    toml = 'url = "postgresql://kms:secret+url://db@db.internal:5432/kms"\n'
    result = launch_backend("file", {"KMS_SECRETS_DIR": str(secrets_dir)})(toml)
    assert result.returncode == 65
    assert "not UTF-8" in result.stderr
    assert "secret-bytes" not in result.output


# -- --check warns about plain references that would break a URL authority ------------------------


def warnings_of(result: Launch) -> list[str]:
    assert result.returncode == 0, result.stderr
    return [line for line in result.stderr.splitlines() if "would break" in line]


def test_check_warns_about_a_breaking_password_naming_key_and_reference_only(
    vault_launch: Launcher,
) -> None:
    result = vault_launch(
        '[db]\nurl = "postgresql://kms:secret://secret/url/db#password@db.internal:5432/kms"\n',
        None,
        "--check",
    )
    [warning] = warnings_of(result)
    assert "db.url" in warning
    assert "secret://secret/url/db#password" in warning
    assert "secret+url://" in warning
    for leak in (HOSTILE, ENCODED, "p@ss", "w:rd", "é", "'@'", "'/'"):
        assert leak not in result.output


def test_check_does_not_warn_about_a_safe_password(
    openbao: OpenBao, vault_launch: Launcher
) -> None:
    openbao.put("url/safe", password="Only-safe_chars.~!$&'()*+,;=:")
    result = vault_launch(
        'url = "postgresql://kms:secret://secret/url/safe#password@db.internal:5432/kms"\n',
        None,
        "--check",
    )
    assert warnings_of(result) == []


def test_check_does_not_warn_about_an_encoded_reference(vault_launch: Launcher) -> None:
    result = vault_launch(
        'url = "postgresql://kms:secret+url://secret/url/db#password@db.internal:5432/kms"\n',
        None,
        "--check",
    )
    assert warnings_of(result) == []


def test_check_does_not_warn_outside_a_url_authority(vault_launch: Launcher) -> None:
    toml = 'plain = "secret://secret/url/db#password"\nquery = "https://h/cb?token=secret://secret/url/db#password"\n'
    assert warnings_of(vault_launch(toml, None, "--check")) == []


def test_check_warns_about_a_user_name_holding_a_colon(
    openbao: OpenBao, vault_launch: Launcher
) -> None:
    openbao.put("url/user", user="kms:admin", password="safe")
    toml = 'url = "postgresql://secret://secret/url/user#user:secret://secret/url/user#password@db.internal/kms"\n'
    [warning] = warnings_of(vault_launch(toml, None, "--check"))
    assert "secret://secret/url/user#user" in warning
    assert "user" in warning
    assert "kms:admin" not in warning


def test_check_warns_about_a_host_that_is_not_a_host(
    launch_backend: Callable[..., Launcher],
) -> None:
    result = launch_backend("env", {"REDIS_HOST": "cache/0?db=1"})(
        'url = "redis://secret://REDIS_HOST?db=0"\n', None, "--check"
    )
    [warning] = warnings_of(result)
    assert "host" in warning
    assert "cache/0" not in result.output
