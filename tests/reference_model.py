"""Strings and TOML documents generated from a model that knows where it put each reference, so
the scanner and the substitution are judged against the model, never against themselves."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

# Well-formed references, each with a '/' after its first component (so no text before it can
# make it look like a URL's authority), written as the grammar allows, embedded or whole.
REFERENCES = (
    "secret://kv/a",
    "secret://kv/b#f",
    "secret://[::1]:9998/obj",
    "secret://kv%2Fteam/app%20one#f%23ld",
    "secret://kms.internal:9998/4f1c-obj",
    "secret://eu-west-1/kms/db~1+x=y",
)
# Characters outside the grammar: one follows every reference not at the end of its string, so
# the text after it cannot extend it.
TERMINATORS = (" ", "@", '"', "\n", ",", ";", "!", "(", ")", "*", "$", "'", "\\", "\t", "é", "\x00")
# Text around references: anything but 's'/'S' (no marker can form) and ':' (no "scheme://"
# either), so the model knows every reference in the string.
plain = st.text(st.characters(codec="utf-8", exclude_characters="sS:"), max_size=8)


@dataclass(frozen=True)
class Modelled:
    """A string as the parts it was made of: plain text, or a reference (its text)."""

    parts: tuple[tuple[str, str], ...]  # ("text", t) or ("ref", reference)

    @property
    def text(self) -> str:
        return "".join(value for _, value in self.parts)

    @property
    def references(self) -> list[str]:
        return [value for kind, value in self.parts if kind == "ref"]

    def spans(self) -> list[tuple[int, int, str]]:
        """(start, end, reference) of each reference, from the model."""
        found, position = [], 0
        for kind, value in self.parts:
            if kind == "ref":
                found.append((position, position + len(value), value))
            position += len(value)
        return found

    def substituted(self, values: Mapping[str, str]) -> str:
        return "".join(values[value] if kind == "ref" else value for kind, value in self.parts)


@st.composite
def modelled_strings(draw: Callable[..., Any]) -> Modelled:
    """Plain text and references interleaved; about four in five strings hold a reference."""
    parts: list[tuple[str, str]] = []

    def add(kind: str, value: str) -> None:
        if parts and parts[-1][0] == "ref":  # whatever follows a reference must not extend it
            parts.append(("text", draw(st.sampled_from(TERMINATORS))))
        parts.append((kind, value))

    for _ in range(draw(st.integers(0, 4))):
        if draw(st.integers(0, 9)) < 6:
            add("ref", draw(st.sampled_from(REFERENCES)))
        else:
            add("text", draw(plain))
    if not any(kind == "ref" for kind, _ in parts) and draw(st.integers(0, 9)) < 8:
        add("ref", draw(st.sampled_from(REFERENCES)))
    return Modelled(tuple(parts))


def _render(node: Any, text: Callable[[Modelled], str]) -> Any:
    if isinstance(node, Modelled):
        return text(node)
    if isinstance(node, list):
        return [_render(item, text) for item in node]
    if isinstance(node, dict):
        return {key: _render(item, text) for key, item in node.items()}
    return node


def _strings(node: Any) -> list[Modelled]:
    if isinstance(node, Modelled):
        return [node]
    if isinstance(node, list):
        return [found for item in node for found in _strings(item)]
    if isinstance(node, dict):
        return [found for item in node.values() for found in _strings(item)]
    return []


@dataclass(frozen=True)
class ModelledDocument:
    """A TOML document's data, its strings modelled."""

    tree: dict[str, Any]

    def original(self) -> dict[str, Any]:
        rendered: dict[str, Any] = _render(self.tree, lambda m: m.text)
        return rendered

    def substituted(self, values: Mapping[str, str]) -> dict[str, Any]:
        rendered: dict[str, Any] = _render(self.tree, lambda m: m.substituted(values))
        return rendered

    @property
    def references(self) -> list[str]:
        return [ref for string in _strings(self.tree) for ref in string.references]


_scalars = st.one_of(
    modelled_strings(), modelled_strings(), st.integers(), st.booleans(), st.floats(allow_nan=False)
)
modelled_documents = st.dictionaries(
    st.text(min_size=1, max_size=6),
    st.recursive(
        _scalars,
        lambda inner: st.lists(inner, max_size=3)
        | st.dictionaries(st.text(min_size=1, max_size=4), inner, max_size=3),
        max_leaves=12,
    ),
    min_size=1,
    max_size=5,
).map(ModelledDocument)
