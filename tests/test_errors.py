"""Exit codes: each failure kind has its sysexits code; mixed failures exit with the most permanent."""

from __future__ import annotations

import pytest

from launcher.errors import (
    AccessDenied,
    BackendUnavailable,
    BadReference,
    Failures,
    NotConfigured,
    SecretNotFound,
)


@pytest.mark.parametrize(
    ("errors", "expected"),
    [
        ([BackendUnavailable("down"), SecretNotFound("gone")], 65),
        ([BackendUnavailable("down"), AccessDenied("no"), SecretNotFound("gone")], 77),
        ([AccessDenied("no"), NotConfigured("no creds")], 78),
        ([BackendUnavailable("down"), BackendUnavailable("down again")], 69),
        ([BadReference("bad")], 65),
    ],
)
def test_mixed_failures_exit_with_the_most_permanent_code(errors, expected) -> None:
    assert Failures(errors).exit_code == expected


def test_nested_failures_are_flattened() -> None:
    inner = Failures([SecretNotFound("a", ref="secret://a"), SecretNotFound("b", ref="secret://b")])
    outer = Failures([inner, AccessDenied("c", ref="secret://c")])
    assert [error.ref for error in outer.errors] == ["secret://a", "secret://b", "secret://c"]


def test_an_error_line_names_key_reference_and_reason() -> None:
    error = SecretNotFound("no such field", ref="secret://kv/db#pw").at("db.database_url")
    assert error.line() == "kms-launch: db.database_url: secret://kv/db#pw: no such field"


def test_an_error_without_key_or_reference_is_still_one_line() -> None:
    assert NotConfigured("no credentials").line() == "kms-launch: no credentials"
