"""`#field` for backends without native fields: a top-level key of a value that is a JSON object."""

from __future__ import annotations

import json
from typing import Any

from launcher.errors import BadSecretValue, SecretNotFound

_JSON_TYPES = {dict: "object", list: "array", bool: "boolean", type(None): "null"}


class _Number(str):
    """A JSON number kept exactly as written (5432, 1e3, 0.10): Python's float would rewrite it."""


def json_field(value: bytes, field: str, *, ref: str, where: str) -> bytes:
    """The bytes of key `field` of the JSON object `value`. The rule:
    - the value must be a JSON object, else BadSecretValue (65);
    - a missing key is SecretNotFound (65);
    - a string gives its text (UTF-8), a number its text as written;
    - true, false, null, an object or an array is BadSecretValue (65), naming the JSON type.
    Never quotes the value or any part of it."""
    try:
        document: Any = json.loads(value, parse_int=_Number, parse_float=_Number)
    except (ValueError, RecursionError):  # JSONDecodeError and bad UTF-8 are ValueErrors
        raise BadSecretValue(
            f"{where} is not JSON, so it has no field {field!r}", ref=ref
        ) from None
    if not isinstance(document, dict):
        kind = _kind(document)
        raise BadSecretValue(
            f"{where} is a JSON {kind}, not an object, so it has no field {field!r}", ref=ref
        )
    if field not in document:
        raise SecretNotFound(f"{where} has no field {field!r}", ref=ref)
    found = document[field]
    if isinstance(found, str):  # _Number is a str too: both are delivered as their text
        return found.encode("utf-8")
    raise BadSecretValue(
        f"field {field!r} of {where} is a JSON {_kind(found)}, not a string or number", ref=ref
    )


def _kind(node: Any) -> str:
    if isinstance(node, _Number):
        return "number"
    if isinstance(node, str):
        return "string"
    return _JSON_TYPES.get(type(node), type(node).__name__)
