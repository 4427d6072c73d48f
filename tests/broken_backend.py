"""A backend with a bug, for the one path no real input reaches: an exception the launcher does
not know. Registered by tests/test_cli.py through the backend registry, the same extension point
a new backend uses; its message quotes a secret, as a careless SDK's might."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from launcher.backends import Backend
from launcher.refs import Ref

LEAKED = "s3cr3t-in-an-exception-message-4e2"


class BrokenBackend(Backend):
    name = "broken"

    def fetch(self, refs: Sequence[Ref]) -> Mapping[Ref, Any]:
        raise KeyError(f"no field in answer {{'password': '{LEAKED}'}}")
