"""`python -m launcher` and the console script: quiet exit on a signal from the start, then the CLI."""

from __future__ import annotations

from typing import NoReturn


def main() -> NoReturn:
    from launcher import deadline, launch  # light: handlers and the clock before heavy imports

    deadline.count_from_process_start()

    # Typer and tomlkit take ~250 ms to import: a Ctrl-C or `systemctl stop` then must exit
    # 128+signal with no traceback, as it does later during resolution.
    launch.exit_on_termination_signals()
    from launcher.cli import exec_app

    exec_app()


if __name__ == "__main__":
    main()
