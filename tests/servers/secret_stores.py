"""Secret stores the backend contract test drives: put a secret, get its reference and environment."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Protocol


class SecretStore(Protocol):
    """A place to put secrets for one backend, and the environment that backend needs to read them."""

    backend: str

    def put(self, value: str) -> str:
        """Store `value` under a fresh name; return the reference that reads it."""

    def missing(self) -> str:
        """A well-formed reference to a secret that does not exist."""

    def environ(self) -> dict[str, str]:
        """Variables the backend reads (address, credentials)."""


_names = itertools.count()


class FileStore:
    backend = "file"

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def put(self, value: str) -> str:
        name = f"contract-{next(_names)}"
        (self.directory / name).write_text(value)
        return f"secret://{name}"

    def missing(self) -> str:
        return "secret://does-not-exist"

    def environ(self) -> dict[str, str]:
        return {"KMS_SECRETS_DIR": str(self.directory)}


class EnvStore:
    backend = "env"

    def __init__(self) -> None:
        self.variables: dict[str, str] = {}

    def put(self, value: str) -> str:
        name = f"CONTRACT_SECRET_{next(_names)}"
        self.variables[name] = value
        return f"secret://{name}"

    def missing(self) -> str:
        return "secret://CONTRACT_SECRET_MISSING"

    def environ(self) -> dict[str, str]:
        return dict(self.variables)
