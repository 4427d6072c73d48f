"""Paths and the clean environment every timed launch starts from."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
VENVS = BENCH / ".venvs"  # throwaway virtual environments, rebuilt when their inputs change
OUT = BENCH / "out"  # results.json, scratch configs and server logs

# Variables of this machine that would steer a launcher or a CLI under test. PYTHON* goes too:
# this machine exports PYTHONDONTWRITEBYTECODE=1, which no server has and which slows imports.
_AMBIENT_PREFIXES = ("KMS_", "VAULT_", "BAO_", "AWS_", "AZURE_", "COSMIAN_", "MSAL_", "PYTHON")


def clean_environ(home: Path) -> dict[str, str]:
    """This machine's environment without credentials, endpoints or Python tweaks of its own;
    HOME points at an empty directory (no ~/.vault-token, ~/.aws)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(_AMBIENT_PREFIXES)}
    home.mkdir(parents=True, exist_ok=True)
    environ["HOME"] = str(home)
    return environ
