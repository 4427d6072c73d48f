"""The secret:// grammar: find references inside a string and parse each into a Ref."""

from __future__ import annotations

import re
import string
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from ipaddress import IPv6Address
from urllib.parse import unquote_to_bytes

from launcher.errors import BadReference

VALUE = "secret"  # substituted as a TOML string
FILE = "secret+file"  # bytes delivered in their own memfd, path substituted
FILE_BASE64 = "secret+file+base64"  # same, base64-decoded first
URL = "secret+url"  # substituted percent-encoded, for a value that sits inside a URL
VERSION_PARAMETER = "version"  # secret://...?version=<pin>: the one pin syntax of every backend

_SEGMENT = r"[A-Za-z0-9._~%+=-]+"
_REFERENCE = re.compile(
    rf"""
    (?P<scheme>secret(?:\+file(?:\+base64)?|\+url)?)://
    (?: (?P<ipv6>\[[^\]/\#\s]*\]) | (?P<name>{_SEGMENT}) )?
    (?: :(?P<port>[0-9]+) )?
    (?P<path>(?:/{_SEGMENT})*)
    (?: \?version=(?P<version>{_SEGMENT}) )?
    (?: \#(?P<field>{_SEGMENT}) )?
    """,
    re.VERBOSE,
)
_PIN = f"?{VERSION_PARAMETER}="
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_SHOWN_TAIL = re.compile(r"[^\s\"'@]{0,20}")
MARKER = "secret"  # cheap pre-filter: a string without it holds no reference
# A URL's authority so far: scheme "://" and no '/', '?' or '#' since (RFC 3986, 3.2).
_AUTHORITY_BEFORE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://([^/?#]*)\Z")
_AUTHORITY_AFTER = re.compile(r"[^/?#]*")
_UNRESERVED = frozenset(string.ascii_letters + string.digits + "-._~")
_SUB_DELIMS = frozenset("!$&'()*+,;=")
_HOST_PORT = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9!$&'()*+,;=._~-]+)(?::[0-9]*)?")


@dataclass(frozen=True)
class Ref:
    """One reference as written, parsed. Equal references are fetched once."""

    text: str
    scheme: str
    host: str  # first component: a decoded segment, or an IPv6 literal with its brackets
    port: int | None
    path: tuple[str, ...]  # decoded segments after the first
    field: str | None
    version: str | None = None  # the pin of ?version=<pin>, decoded

    def __str__(self) -> str:
        return self.text

    @property
    def segments(self) -> tuple[str, ...]:
        """Every decoded segment, the first component included."""
        return (self.host, *self.path)


@dataclass(frozen=True)
class Span:
    """Where a reference sits in the string that holds it."""

    start: int
    end: int
    ref: Ref


def find(text: str) -> Iterator[Span]:
    """Yield every reference in `text`, in order; raise BadReference for a malformed one."""
    if MARKER not in text:
        return
    for match in _REFERENCE.finditer(text):
        ref = _parse(match, text)
        if ref.scheme not in (VALUE, URL) and (match.start() != 0 or match.end() != len(text)):
            raise BadReference(
                f"{ref.scheme}:// must be the whole value, not part of a string", ref=ref.text
            )
        yield Span(match.start(), match.end(), ref)


def parse(text: str) -> Ref:
    """Parse a string that must be exactly one reference."""
    spans = list(find(text))
    if len(spans) != 1 or spans[0].start != 0 or spans[0].end != len(text):
        raise BadReference("not a single secret:// reference", ref=text)
    return spans[0].ref


def authority_part(text: str, spans: Sequence[Span], index: int) -> str | None:
    """Where reference spans[index] of `text` sits if inside a URL's authority ('user',
    'password' or 'host'), else None. Other references count as plain characters."""

    def joined(start: int, end: int) -> str:
        pieces, position = [], start
        for span in spans:
            if start <= span.start and span.end <= end:
                pieces += [text[position : span.start], "x"]
                position = span.end
        return "".join([*pieces, text[position:end]])

    span = spans[index]
    before = _AUTHORITY_BEFORE.search(joined(0, span.start))
    if before is None:
        return None
    authority = before.group(1)
    after = _AUTHORITY_AFTER.match(joined(span.end, len(text)))
    if "@" in authority or "@" not in (after.group(0) if after else ""):
        return "host"
    return "password" if ":" in authority else "user"


def breaks_authority(value: str, part: str) -> bool:
    """Whether `value`, substituted as is into that part of an authority, changes the URL: a
    delimiter (@ / ? # and ':' in a user name), '%' (decoded by the parser), anything else
    outside RFC 3986's characters for that part."""
    if part == "host":
        return _HOST_PORT.fullmatch(value) is None
    allowed = _UNRESERVED | _SUB_DELIMS | ({":"} if part == "password" else set())
    return any(character not in allowed for character in value)


def _parse(match: re.Match[str], text: str) -> Ref:
    written = match.group(0)
    following = text[match.end() : match.end() + 1]
    if match.group("ipv6") is None and match.group("name") is None:
        raise BadReference("empty or malformed reference", ref=_shown(text, match))
    if following == "#":
        raise BadReference("empty field after '#'", ref=written)
    if text.startswith(_PIN, match.end()):
        # Any other '?' ends the reference (a URL's own query may follow one); '?version=' is
        # ours, so an empty pin, a second one or one after '#field' is a mistake, not text.
        if match.group("version") is None and match.group("field") is None:
            raise BadReference("empty version after '?version='", ref=_shown(text, match))
        raise BadReference(
            "one '?version=<pin>' at most, before any '#field'", ref=_shown(text, match)
        )
    host = match.group("ipv6") or _decode(match.group("name"), written)
    if match.group("ipv6"):
        try:
            IPv6Address(host[1:-1])
        except ValueError:
            raise BadReference(f"bad IPv6 address {host}", ref=written) from None
    port = None
    if match.group("port") is not None:
        digits = match.group("port").lstrip("0")
        # Checked by length first: int() refuses more than 4300 digits with its own ValueError.
        port = int(digits) if 0 < len(digits) <= 5 else 0
        if not 0 < port < 65536:
            raise BadReference(f"port {_shown_port(digits)} out of range", ref=_shown_port(written))
    path = tuple(_decode(segment, written) for segment in match.group("path").split("/")[1:])
    field = match.group("field")
    version = match.group("version")
    return Ref(
        text=written,
        scheme=match.group("scheme"),
        host=host,
        port=port,
        path=path,
        field=None if field is None else _decode(field, written),
        version=None if version is None else _decode(version, written),
    )


def _decode(segment: str, written: str) -> str:
    if "%" not in segment:
        return segment
    if _BAD_ESCAPE.search(segment):
        raise BadReference("invalid %-escape", ref=written)
    try:
        return unquote_to_bytes(segment).decode("utf-8")
    except UnicodeDecodeError:
        raise BadReference("%-escapes do not decode as UTF-8", ref=written) from None


def _shown(text: str, match: re.Match[str]) -> str:
    """The malformed reference with a little of what follows, so the user can find it."""
    tail = _SHOWN_TAIL.match(text, match.end())
    return match.group(0) + (tail.group(0) if tail else "")


def _shown_port(text: str) -> str:
    """A port (or a reference holding one) as shown in a message: thousands of digits are cut."""
    return text if len(text) <= 80 else text[:60] + "..." + text[-10:]
