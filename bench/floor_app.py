"""The floor of kms-launch's stack: a minimal Typer app that parses the same config with tomlkit
and execs the command. Nothing is resolved; what it costs, every Typer + tomlkit launcher costs."""

from __future__ import annotations

import os
from typing import Annotated

import tomlkit
import typer

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.command(context_settings={"allow_interspersed_args": False})
def main(
    config: Annotated[str, typer.Option("-c", "--config")],
    command: Annotated[list[str], typer.Argument()],
    backend: Annotated[str | None, typer.Option("--backend")] = None,
) -> None:
    with open(config, "rb") as file:
        document = tomlkit.parse(file.read().decode("utf-8"))
    data = tomlkit.dumps(document).encode("utf-8")
    del backend, data
    os.execv(command[0], command)


if __name__ == "__main__":
    app()
