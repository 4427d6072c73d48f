"""The `env` backend: secrets from environment variables, which are then removed from the server's."""

from __future__ import annotations

import os
import re
from collections.abc import Collection, Mapping, Sequence
from typing import ClassVar

from launcher.backends import Backend, Secret, reject_field, reject_port, reject_version
from launcher.deadline import Deadline
from launcher.errors import BadReference, Failures, SecretNotFound
from launcher.refs import Ref

_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class EnvBackend(Backend):
    """secret://<VARIABLE> is that variable's value."""

    name: ClassVar[str] = "env"

    def __init__(self, environ: Mapping[str, str], deadline: Deadline) -> None:
        super().__init__(environ, deadline)
        self._consumed: set[str] = set()

    def check(self, ref: Ref) -> None:
        reject_field(ref)
        reject_port(ref)
        reject_version(ref, "a variable has only its current value")
        if ref.path or not _VARIABLE.fullmatch(ref.host):
            raise BadReference("expected secret://<VARIABLE_NAME>", ref=ref.text)

    def fetch(self, refs: Sequence[Ref]) -> Mapping[Ref, Secret]:
        values = {
            ref: Secret(os.fsencode(self.environ[ref.host]))
            for ref in refs
            if ref.host in self.environ
        }
        self._consumed = {ref.host for ref in values}
        if len(values) < len(refs):
            raise Failures(
                (
                    SecretNotFound(f"environment variable {ref.host} is not set", ref=ref.text)
                    for ref in refs
                    if ref not in values
                ),
                resolved=values,
            )
        return values

    def consumed_env(self) -> Collection[str]:
        return self._consumed
