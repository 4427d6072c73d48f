"""Every contender as a command line: given a workload and the server command, the argv and the
extra environment that run it."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import BENCH
from bench.envs import Setup
from bench.workload import Workload
from tests.servers.openbao import bao_binary

Argv = Callable[[Workload, Sequence[str]], list[str]]


@dataclass(frozen=True)
class Contender:
    key: str
    label: str
    backends: tuple[str, ...]  # the backends it can read; () for the overhead references
    argv: Argv
    environ: dict[str, str] = field(default_factory=dict)
    rss: bool = True  # the launcher is the process itself (not a shell around many children)


def build(setup: Setup) -> dict[str, Contender]:
    """Every contender that installed here, by key."""
    launch, typer029 = setup.launch, setup.typer029
    remote = ("vault", "aws-ssm", "azure-kv", "cosmian-kms")
    floor_app = str(BENCH / "floor_app.py")
    serial = str(BENCH / "serial_resolver.py")

    def kms_launch(venv_bin: str) -> Argv:
        return lambda w, command: [
            venv_bin,
            "--backend",
            w.backend,
            "-c",
            str(w.config),
            "--",
            *command,
        ]

    def floor(python: str) -> Argv:
        return lambda w, command: [python, floor_app, "-c", str(w.config), "--", *command]

    contenders = [
        Contender("python", "python -c pass", (), lambda w, command: [launch.python, "-c", "pass"]),
        Contender("floor", "minimal Typer app (Typer 0.28)", (), floor(launch.python)),
        Contender("floor-029", "minimal Typer app (Typer 0.29)", (), floor(typer029.python)),
        Contender(
            "kms-launch", "kms-launch", ("file", *remote), kms_launch(launch.bin("kms-launch"))
        ),
        Contender(
            "kms-launch-029",
            "kms-launch on Typer 0.29",
            ("file",),
            kms_launch(typer029.bin("kms-launch")),
        ),
        Contender(
            "serial",
            "serial resolver (the KMS built-in resolver's strategy)",
            remote,
            lambda w, command: [launch.python, serial, w.backend, str(w.config), "--", *command],
        ),
        Contender(
            "shell-bao",
            "shell: bao kv get + envsubst",
            ("vault",),
            lambda w, command: _script("bao.sh", w.manifest, w.envsubst_template, w, command),
            {"BAO": str(bao_binary())},
            rss=False,
        ),
    ]
    if setup.awscli is not None:
        contenders.append(
            Contender(
                "shell-aws",
                "shell: aws ssm get-parameter + envsubst",
                ("aws-ssm",),
                lambda w, command: _script("aws.sh", w.manifest, w.envsubst_template, w, command),
                {"AWS": setup.awscli.bin("aws")},
                rss=False,
            )
        )
    if setup.vaultcli is not None:
        contenders.append(
            Contender(
                "vault-cli",
                "vault-cli template",
                ("vault",),
                lambda w, command: _script("vault_cli.sh", w.jinja_template, None, w, command),
                {"VAULT_CLI": setup.vaultcli.bin("vault-cli")},
                rss=False,
            )
        )
    return {contender.key: contender for contender in contenders}


def this_tree() -> dict[str, Contender]:
    """kms-launch as the project's own venv runs it (this tree, editable): for `--only`, which
    builds no venvs."""
    binary = str(Path(sys.executable).with_name("kms-launch"))
    return {
        "kms-launch": Contender(
            "kms-launch",
            "kms-launch",
            ("file", "vault", "aws-ssm", "aws-sm", "azure-kv", "cosmian-kms"),
            lambda w, command: [binary, "--backend", w.backend, "-c", str(w.config), "--", *command],
        )
    }


def backend_environ(contender: Contender, backend_env: dict[str, str]) -> dict[str, str]:
    """The backend's deployment variables in the names this contender's tool reads."""
    environ = dict(backend_env)
    if contender.key == "shell-bao":
        environ.update(BAO_ADDR=backend_env["VAULT_ADDR"], BAO_TOKEN=backend_env["VAULT_TOKEN"])
    if contender.key == "vault-cli":
        environ.update(
            VAULT_CLI_URL=backend_env["VAULT_ADDR"], VAULT_CLI_TOKEN=backend_env["VAULT_TOKEN"]
        )
    return environ


def _script(
    name: str, first: Path, second: Path | None, workload: Workload, command: Sequence[str]
) -> list[str]:
    """A script of bench/shell: its inputs, then where it writes the resolved config (plaintext
    on disk, as such scripts do), then the server command."""
    inputs = [str(path) for path in (first, second) if path is not None]
    output = str(workload.directory / "resolved.toml")
    return ["bash", str(BENCH / "shell" / name), *inputs, output, "--", *command]
