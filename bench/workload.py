"""The work every contender does: N secrets in a backend, and a config that references them.

The stores are filled once with the largest N; a workload of N takes the first N secrets, so
every N and every contender reads the same values from the same servers."""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from bench.servers import Stack
from tests.servers.moto_ssm import REGION

FIELDS_PER_PATH = 4  # the vault `fields` layout: N fields over N/4 paths


@dataclass(frozen=True)
class Secret:
    ref: str  # the secret:// reference kms-launch and the serial resolver read
    value: str
    location: tuple[str, ...]  # what a CLI asks for: (path, field) for vault, (name,) for SSM


@dataclass(frozen=True)
class Workload:
    backend: str
    layout: str  # "paths" (one secret per Vault path) or "fields" (4 per path); "" elsewhere
    secrets: tuple[Secret, ...]
    directory: Path

    @property
    def n(self) -> int:
        return len(self.secrets)

    @property
    def label(self) -> str:
        return f"{self.backend}/{self.layout}" if self.layout else self.backend

    @property
    def config(self) -> Path:
        """The config with secret:// references, as kms-launch and the serial resolver read it."""
        return self._write("kms.toml", lambda index, secret: f'"{secret.ref}"')

    @property
    def envsubst_template(self) -> Path:
        """The same config for the shell script: ${S<i>} where each value goes."""
        return self._write("kms.toml.envsubst", lambda index, secret: f'"${{S{index}}}"')

    @property
    def jinja_template(self) -> Path:
        """The same config for vault-cli: a Jinja expression reading each KV-v2 field."""

        def expression(index: int, secret: Secret) -> str:
            path, field = secret.location
            mount, rest = path.split("/", 1)
            return f"\"{{{{ vault('{mount}/data/{rest}').data['{field}'] }}}}\""

        return self._write("kms.toml.j2", expression)

    @property
    def manifest(self) -> Path:
        """One line per value for the shell script: variable name, then what to fetch."""
        path = self.directory / "manifest"
        if not path.exists():
            lines = [" ".join((f"S{i}", *s.location)) for i, s in enumerate(self.secrets)]
            path.write_text("\n".join(lines) + "\n")
        return path

    def expected(self) -> dict[str, str]:
        """The [bench] table the server must receive."""
        return {f"s{i}": secret.value for i, secret in enumerate(self.secrets)}

    def _write(self, name: str, value: Callable[[int, Secret], str]) -> Path:
        path = self.directory / name
        if not path.exists():
            lines = [
                f"# Cosmian KMS config for the benchmark: {self.n} references ({self.label})",
                'default_username = "admin"',
                "",
                "[http]",
                "port = 9998",
                'hostname = "0.0.0.0"',
                "",
                "[bench]",
                *(f"s{i} = {value(i, secret)}" for i, secret in enumerate(self.secrets)),
            ]
            path.write_text("\n".join(lines) + "\n")
        return path


class Stores:
    """The largest workload of each backend, stored once; `workload()` cuts N secrets from it."""

    def __init__(self, stack: Stack, largest: int, directory: Path) -> None:
        shutil.rmtree(directory, ignore_errors=True)  # configs of an earlier run name other secrets
        self.directory = directory
        self._all: dict[str, list[Secret]] = {}
        tag = secrets.token_hex(3)
        with ThreadPoolExecutor(8) as pool:
            self._all["vault/paths"] = list(
                pool.map(lambda i: _vault_path(stack, tag, i), range(largest))
            )
            paths = -(-largest // FIELDS_PER_PATH)
            grouped = pool.map(lambda j: _vault_fields(stack, tag, j), range(paths))
            self._all["vault/fields"] = [s for group in grouped for s in group][:largest]
            self._all["aws-ssm"] = list(pool.map(lambda i: _ssm(stack, tag, i), range(largest)))
            self._all["aws-sm"] = list(pool.map(lambda i: _sm(stack, tag, i), range(largest)))
        self._all["azure-kv"] = [_azure(stack, tag, i) for i in range(largest)]
        self._all["cosmian-kms"] = [_cosmian(stack, tag, i) for i in range(largest)]

    def workload(self, label: str, n: int) -> Workload:
        backend, _, layout = label.partition("/")
        directory = self.directory / label.replace("/", "-") / str(n)
        directory.mkdir(parents=True, exist_ok=True)
        return Workload(backend, layout, tuple(self._all[label][:n]), directory)


def _value(kind: str, index: int) -> str:
    return f"{kind}-{index}-{secrets.token_urlsafe(12)}"


def _vault_path(stack: Stack, tag: str, index: int) -> Secret:
    path = f"bench-{tag}/p{index}"
    value = _value("vault", index)
    stack.openbao.put(path, value=value)
    return Secret(f"secret://secret/{path}", value, (f"secret/{path}", "value"))


def _vault_fields(stack: Stack, tag: str, index: int) -> list[Secret]:
    path = f"bench-{tag}/q{index}"
    fields = {f"f{k}": _value("vault", index * FIELDS_PER_PATH + k) for k in range(FIELDS_PER_PATH)}
    stack.openbao.put(path, **fields)
    return [
        Secret(f"secret://secret/{path}#{field}", value, (f"secret/{path}", field))
        for field, value in fields.items()
    ]


def _ssm(stack: Stack, tag: str, index: int) -> Secret:
    name = f"/bench-{tag}/p{index}"
    value = _value("ssm", index)
    stack.moto.put(name, value)
    return Secret(f"secret://{REGION}{name}", value, (name,))


def _sm(stack: Stack, tag: str, index: int) -> Secret:
    name = f"bench-{tag}/s{index}"
    value = _value("sm", index)
    stack.moto.client(service="secretsmanager").create_secret(Name=name, SecretString=value)
    return Secret(f"secret://{REGION}/{name}", value, (name,))


def _azure(stack: Stack, tag: str, index: int) -> Secret:
    name = f"bench-{tag}-p{index}"
    value = _value("azure", index)
    stack.azure.put(name, value)
    return Secret(f"secret://kmsvault/secrets/{name}", value, (name,))


def _cosmian(stack: Stack, tag: str, index: int) -> Secret:
    value = _value("kms", index)
    uid = stack.cosmian.put_secret_data(value.encode())
    return Secret(stack.cosmian.ref(uid), value, (uid,))
