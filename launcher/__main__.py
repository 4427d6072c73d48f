"""`python -m launcher` runs the command line."""

from launcher.cli import exec_app

exec_app()
