"""The secret:// grammar: where references start and end, how they parse, what is malformed."""

from __future__ import annotations

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from launcher import refs
from launcher.errors import BadReference
from tests.reference_model import Modelled, modelled_strings


def texts(value: str) -> list[str]:
    return [span.ref.text for span in refs.find(value)]


def test_a_whole_string_reference_is_found() -> None:
    assert texts("secret://secret/kms/db") == ["secret://secret/kms/db"]


def test_an_embedded_reference_ends_at_the_first_character_outside_the_grammar() -> None:
    value = "postgresql://kms:secret://secret/kms/db#password@db.internal:5432/kms"
    [span] = refs.find(value)
    assert span.ref.text == "secret://secret/kms/db#password"
    assert value[span.end :] == "@db.internal:5432/kms"
    assert value[: span.start] == "postgresql://kms:"


def test_two_references_in_one_string_are_both_found() -> None:
    assert texts("postgresql://secret://DB_USER:secret://DB_PASS@db/kms") == [
        "secret://DB_USER",
        "secret://DB_PASS",
    ]


def test_a_reference_parses_into_host_path_and_field() -> None:
    ref = refs.parse("secret://secret/kms/db#password")
    assert (ref.scheme, ref.host, ref.port, ref.path, ref.field) == (
        "secret", "secret", None, ("kms", "db"), "password"
    )


def test_a_host_with_a_port_parses() -> None:
    ref = refs.parse("secret://kms.internal:9998/4f1c-obj")
    assert (ref.host, ref.port, ref.path) == ("kms.internal", 9998, ("4f1c-obj",))


def test_an_ipv6_literal_host_parses() -> None:
    ref = refs.parse("secret://[::1]:9998/obj")
    assert (ref.host, ref.port) == ("[::1]", 9998)


def test_percent_escapes_are_decoded_per_segment_after_splitting() -> None:
    ref = refs.parse("secret://kv%2Fteam/app%20one#f%23ld")
    assert ref.segments == ("kv/team", "app one")
    assert ref.field == "f#ld"


def test_all_grammar_characters_stay_in_a_segment() -> None:
    assert refs.parse("secret://a.b_c-d~e+f=g").host == "a.b_c-d~e+f=g"


def test_strings_without_the_marker_hold_no_reference() -> None:
    assert texts("postgresql://kms:plain@db/kms") == []
    assert texts("mysecret value") == []


def test_file_schemes_are_recognised_as_whole_values() -> None:
    assert refs.parse("secret+file://tls/key.pem").scheme == refs.FILE
    assert refs.parse("secret+file+base64://tls/p12").scheme == refs.FILE_BASE64


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("secret://", "empty"),
        ("prefix secret:// suffix", "empty"),
        ("secret:///path", "empty"),
        ("secret://[zz]/obj", "IPv6"),
        ("secret://[::1/obj", "empty"),
        ("secret://host:0/obj", "port"),
        ("secret://host:70000/obj", "port"),
        ("secret://a/b#", "field"),
        ("secret://a/%zz", "escape"),
        ("secret://a/%4", "escape"),
        ("secret://a/%ff", "UTF-8"),
        ("x secret+file://tls/key", "whole value"),
    ],
)
def test_a_malformed_reference_is_an_error(value: str, reason: str) -> None:
    with pytest.raises(BadReference, match=reason):
        list(refs.find(value))


def test_equal_references_are_equal_and_hash_alike() -> None:
    assert refs.parse("secret://a/b") == refs.parse("secret://a/b")
    assert len({refs.parse("secret://a/b"), refs.parse("secret://a/b")}) == 1


# Any text, but mostly made of the grammar's own pieces, so most examples hold a marker.
grammar_pieces = st.sampled_from(
    ["secret://", "secret+file://", "secret+file+base64://", "secret+url://", "secret", "://",
     "/", "#", "%", "%2F", "%zz", "[", "]", "[::1]", ":", ":9998", "?version=", "@", " ", "a", "kv"]
)  # fmt: skip
_around = st.lists(st.one_of(grammar_pieces, st.text(max_size=4)), max_size=6).map("".join)
texts_near_the_grammar = st.builds(
    lambda before, marker, after: before + marker + after,
    _around,
    st.sampled_from(["secret://", "secret://", "secret://", "secret+file://", "secret+url://", ""]),
    _around,
)


@given(texts_near_the_grammar)
def test_the_scanner_never_crashes_on_any_text(value: str) -> None:
    event("holds the marker" if "secret://" in value else "no marker")
    try:
        spans = list(refs.find(value))
    except BadReference:
        return
    for span in spans:
        assert value[span.start : span.end] == span.ref.text
        assert span.ref.text.startswith("secret")


@given(modelled_strings())
def test_the_scanner_finds_exactly_the_references_the_model_put_in(model: Modelled) -> None:
    event("holds references" if model.references else "holds no reference")
    spans = [(span.start, span.end, span.ref.text) for span in refs.find(model.text)]
    assert spans == model.spans()
