"""Load the TOML config with tomlkit, find every reference in its string values, substitute, dump."""

from __future__ import annotations

import errno
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import tomlkit
import tomlkit.exceptions
from tomlkit.items import AoT, Array, InlineTable, String, StringType, Table, Trivia
from tomlkit.toml_document import TOMLDocument

from launcher import refs
from launcher.errors import BadReference, ConfigUnreadable, Failures, InvalidConfig, LaunchError
from launcher.files import Unreadable, read_regular

# A Cosmian KMS config is a few KiB; 16 MiB leaves room for inline PEM bundles while keeping a
# stray multi-gigabyte file from being read into memory.
MAX_CONFIG_BYTES = 16 * 1024 * 1024

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
# TOML basic-string escapes. tomlkit's own escaping is quadratic in the value's length (measured:
# 20 s for a 1 MiB PEM), so values are escaped here in one str.translate pass and handed to
# tomlkit as a ready-made String item.
_ESCAPES = {code: f"\\u{code:04x}" for code in (*range(0x20), 0x7F)}
_ESCAPES.update(
    {
        ord(c): e
        for c, e in {
            '"': '\\"',
            "\\": "\\\\",
            "\b": "\\b",
            "\t": "\\t",
            "\n": "\\n",
            "\f": "\\f",
            "\r": "\\r",
        }.items()
    }
)


@dataclass(frozen=True)
class Occurrence:
    """A string value that holds one or more references, and where it sits in the document."""

    key_path: str
    parent: Any = field(repr=False)  # the tomlkit table, inline table or array holding it
    key: str | int = field(repr=False)
    original: str = field(repr=False)
    spans: tuple[refs.Span, ...] = ()


def load(path: str) -> TOMLDocument:
    """Read and parse the config, or raise ConfigUnreadable (66) / InvalidConfig (65)."""
    return parse(decode(read(path), path), path)


def parse(text: str, source: str = "config") -> TOMLDocument:
    """Parse TOML text; a syntax error names its line and column."""
    try:
        return tomlkit.parse(text)
    except tomlkit.exceptions.ParseError as error:
        reason = str(error).split(" at line ")[0]
        raise InvalidConfig(
            f"{source}: invalid TOML at line {error.line}, column {error.col}: {reason}"
        ) from None
    except tomlkit.exceptions.TOMLKitError as error:
        raise InvalidConfig(f"{source}: invalid TOML: {error}") from None


def find_references(document: TOMLDocument) -> list[Occurrence]:
    """Every string value holding a reference, at any depth; all malformed ones raised together."""
    found: list[Occurrence] = []
    malformed: list[LaunchError] = []
    for key_path, parent, key, value in _strings(document, ""):
        try:
            spans = tuple(refs.find(value))
        except BadReference as error:
            malformed.append(error.at(key_path))
            continue
        if spans:
            found.append(Occurrence(key_path, parent, key, str(value), spans))
    if malformed:
        raise Failures(malformed)
    return found


def substitute(occurrences: list[Occurrence], replacements: Mapping[refs.Ref, str]) -> None:
    """Replace every reference in place with its value, as a properly escaped TOML string."""
    for occurrence in occurrences:
        pieces: list[str] = []
        position = 0
        for span in occurrence.spans:
            pieces.append(occurrence.original[position : span.start])
            pieces.append(replacements[span.ref])
            position = span.end
        pieces.append(occurrence.original[position:])
        occurrence.parent[occurrence.key] = toml_string("".join(pieces))


def toml_string(value: str) -> String:
    """A single-line basic TOML string item for `value`, escaped in linear time."""
    return String(StringType.SLB, value, value.translate(_ESCAPES), Trivia())


def dump(document: TOMLDocument) -> bytes:
    """The document as UTF-8 TOML bytes."""
    return document.as_string().encode("utf-8")


def read(path: str) -> bytes:
    """The config's bytes: a regular file, not empty, at most MAX_CONFIG_BYTES."""
    try:
        data, _ = read_regular(path, MAX_CONFIG_BYTES)
    except Unreadable as error:
        if error.errno == errno.EFBIG:
            raise InvalidConfig(
                f"{path}: larger than {MAX_CONFIG_BYTES // 2**20} MiB, not a config"
            ) from None
        raise ConfigUnreadable(f"{path}: {error.strerror}") from None
    if not data.strip():
        raise InvalidConfig(f"{path}: is empty")
    return data


def decode(data: bytes, path: str) -> str:
    """The config's text; a byte that is not UTF-8 is named by line and offset, never quoted."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise InvalidConfig(f"{path}: not UTF-8 text (line {line}, byte {error.start})") from None


def _strings(node: Any, prefix: str) -> Iterator[tuple[str, Any, str | int, str]]:
    """(key path, parent, key, value) for every string value under `node`."""
    if isinstance(node, Array):
        children: Iterator[tuple[str | int, Any]] = enumerate(node)
    elif isinstance(node, AoT):
        for index, table in enumerate(node):
            yield from _strings(table, f"{prefix}[{index}]")
        return
    else:
        children = iter(node.items())
    for key, value in children:
        path = f"{prefix}[{key}]" if isinstance(key, int) else _join(prefix, key)
        if isinstance(value, str):
            yield path, node, key, value
        elif isinstance(value, (Table, InlineTable, Array, AoT, dict, list)):
            yield from _strings(value, path)


def _join(prefix: str, key: str) -> str:
    shown = key if _BARE_KEY.fullmatch(key) else '"' + key.translate(_ESCAPES) + '"'
    return f"{prefix}.{shown}" if prefix else shown
