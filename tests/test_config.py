"""Config handling: every string at every depth is scanned, substitution goes through the TOML
document (byte-exact values, layout preserved), and bad files fail with their exit code."""

from __future__ import annotations

import datetime
import os
import time
import tomllib
from pathlib import Path

import pytest
import tomlkit
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from launcher import config, refs
from launcher.errors import BadReference, ConfigUnreadable, Failures, InvalidConfig
from tests.reference_model import ModelledDocument, modelled_documents

NESTED = """\
# the KMS config
title = "secret://top"  # trailing comment stays
port = 9998
enabled = true
when = 1979-05-27T07:32:00Z
"secret://key" = "keys are never scanned"

[db]
database_url = "postgresql://kms:secret://kv/db#password@db.internal:5432/kms"

[deep.er.table]
value = 'secret://literal'

[inline]
table = { user = "u", password = "secret://kv/inline" }
list = ["plain", "secret://kv/in-array", ["secret://kv/nested-array"]]

[[hsm_instances]]
hsm_password = ["secret://kv/hsm0"]

[[hsm_instances]]
hsm_password = ["secret://kv/hsm1"]
"""


def occurrences(text: str) -> dict[str, list[str]]:
    found = config.find_references(config.parse(text))
    return {o.key_path: [span.ref.text for span in o.spans] for o in found}


def test_references_are_found_in_strings_at_every_depth() -> None:
    assert occurrences(NESTED) == {
        "title": ["secret://top"],
        "db.database_url": ["secret://kv/db#password"],
        "deep.er.table.value": ["secret://literal"],
        "inline.table.password": ["secret://kv/inline"],
        "inline.list[1]": ["secret://kv/in-array"],
        "inline.list[2][0]": ["secret://kv/nested-array"],
        "hsm_instances[0].hsm_password[0]": ["secret://kv/hsm0"],
        "hsm_instances[1].hsm_password[0]": ["secret://kv/hsm1"],
    }


def test_keys_numbers_booleans_and_dates_are_never_touched() -> None:
    document = config.parse(NESTED)
    found = config.find_references(document)
    config.substitute(found, {span.ref: "X" for o in found for span in o.spans})
    parsed = tomllib.loads(config.dump(document).decode())
    assert parsed["secret://key"] == "keys are never scanned"
    assert parsed["port"] == 9998
    assert parsed["enabled"] is True
    assert parsed["when"] == datetime.datetime(1979, 5, 27, 7, 32, tzinfo=datetime.UTC)


def test_substitution_keeps_comments_order_and_untouched_lines() -> None:
    document = config.parse(NESTED)
    found = config.find_references(document)
    config.substitute(found, {span.ref: "V" for o in found for span in o.spans})
    out = config.dump(document).decode()
    assert out.splitlines()[1] == 'title = "V"  # trailing comment stays'
    untouched = [line for line in NESTED.splitlines() if "secret://" not in line]
    assert [line for line in out.splitlines() if line in untouched] == untouched


def test_an_embedded_reference_keeps_the_text_around_it() -> None:
    document = config.parse('url = "postgresql://kms:secret://kv/db#pw@db:5432/kms"')
    found = config.find_references(document)
    config.substitute(found, {refs.parse("secret://kv/db#pw"): "p@ss"})
    assert tomllib.loads(config.dump(document).decode())["url"] == "postgresql://kms:p@ss@db:5432/kms"


def test_every_malformed_reference_is_reported_with_its_key() -> None:
    with pytest.raises(Failures) as caught:
        config.find_references(config.parse('a = "secret://"\n[b]\nc = "x secret://h:0/o"\n'))
    assert [(e.key_path, e.exit_code) for e in caught.value.errors] == [("a", 65), ("b.c", 65)]


TEMPLATE = """\
# comment before
[admin]
name = "secret://kv/a"   # after
other = "untouched \\"quoted\\" \\u00e9"
list = ["secret://kv/a", 1, "secret://kv/b"]
embedded = "pre-secret://kv/b@post"
"""

# Any text, mixed with the pieces TOML must escape or that could end a string or open a table.
secret_values = st.lists(
    st.one_of(
        st.text(st.characters(codec="utf-8")),
        st.sampled_from(['"', "\\", "\n", "\r", "\t", "'", "]", "[", "\x00", "\x7f", "\x1b"]),
        st.sampled_from(['"""', "'''", "\n[admin]\n", '"""\n', "\u2028", "\ufeff", "\r\n"]),
    )
).map("".join)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(first=secret_values, second=secret_values)
def test_any_value_comes_out_byte_exact_and_the_rest_unchanged(first: str, second: str) -> None:
    document = config.parse(TEMPLATE)
    found = config.find_references(document)
    config.substitute(found, {refs.parse("secret://kv/a"): first, refs.parse("secret://kv/b"): second})
    out = config.dump(document).decode()
    assert tomllib.loads(out) == {
        "admin": {
            "name": first,
            "other": 'untouched "quoted" é',
            "list": [first, 1, second],
            "embedded": f"pre-{second}@post",
        }
    }
    assert out.startswith("# comment before\n[admin]\n")
    assert '   # after\nother = "untouched \\"quoted\\" \\u00e9"\n' in out


@pytest.mark.parametrize(
    "value",
    [
        "-----BEGIN PRIVATE KEY-----\n" + "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n" * 32_000,
        ('"""\n\\"\'\n' * 150_000)[: 1 << 20],
        "\x00\x01\x1f" * 350_000,
        "",
    ],
    ids=["pem", "quotes-and-newlines", "control-characters", "empty"],
)
def test_a_one_mebibyte_value_substitutes_in_well_under_a_second(value: str) -> None:
    document = config.parse('key = "secret://kv/big"\n')
    found = config.find_references(document)
    # CPU time of this process, not wall time: what substitution costs, whatever else runs.
    started = time.process_time()
    config.substitute(found, {refs.parse("secret://kv/big"): value})
    out = config.dump(document)
    spent = time.process_time() - started
    assert tomllib.loads(out.decode())["key"] == value
    assert spent < 1.0  # tomlkit's own escaping took 20 s to 2 min here


def test_invalid_toml_names_line_and_column() -> None:
    with pytest.raises(InvalidConfig, match=r"line 2, column \d+"):
        config.parse('a = 1\nb = = 2\n')


def test_a_missing_config_is_unreadable(tmp_path: Path) -> None:
    with pytest.raises(ConfigUnreadable, match="no such file"):
        config.load(str(tmp_path / "absent.toml"))


def test_a_directory_is_not_a_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigUnreadable, match="directory"):
        config.load(str(tmp_path))


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(ConfigUnreadable, match="not a regular file"):
        config.load(str(fifo))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty"),
        (b"  \n\n", "empty"),
        (b"a = \"\xff\xfe\"\n", "not UTF-8"),
        (bytes(range(256)) * 4, "not UTF-8"),
        (b"\x00\x01binary", "invalid TOML"),
    ],
    ids=["empty", "blank", "latin1", "binary", "nul"],
)
def test_content_that_is_not_a_toml_config_is_invalid(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "kms.toml"
    path.write_bytes(content)
    with pytest.raises(InvalidConfig, match=message):
        config.load(str(path))


def test_a_config_larger_than_the_limit_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "kms.toml"
    with path.open("wb") as file:
        file.truncate(50 * 1024 * 1024)
    with pytest.raises(InvalidConfig, match="larger than"):
        config.load(str(path))


# -- fuzzing: any document, any values --------------------------------------------------------
# Documents come from a model that knows where it put each reference (tests/reference_model.py):
# the expected result is computed from the model, never from the scanner under test.


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(model=modelled_documents, replacement=secret_values)
def test_any_document_substitutes_into_a_document_that_parses_to_the_expected_values(
    model: ModelledDocument, replacement: str
) -> None:
    event("holds references" if model.references else "holds no reference")
    document = config.parse(tomlkit.dumps(model.original()))
    found = config.find_references(document)
    assert sorted(span.ref.text for o in found for span in o.spans) == sorted(model.references)
    # A distinct value per reference, ending in a character of its own reference.
    values = {text: replacement + text[-1] for text in set(model.references)}
    config.substitute(found, {refs.parse(text): value for text, value in values.items()})
    assert tomllib.loads(config.dump(document).decode()) == model.substituted(values)


@settings(max_examples=100)
@given(model=modelled_documents, where=st.integers(min_value=0))
def test_a_malformed_reference_anywhere_is_reported_never_passed_through(
    model: ModelledDocument, where: int
) -> None:
    data = model.original()
    keys = list(data)
    data[keys[where % len(keys)]] = "before secret:// after"  # an empty reference
    with pytest.raises(Failures) as caught:
        config.find_references(config.parse(tomlkit.dumps(data)))
    assert {type(error) for error in caught.value.errors} == {BadReference}
    assert len(caught.value.errors) == 1
