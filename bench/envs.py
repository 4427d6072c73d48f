"""The virtual environments the benchmark runs its contenders from, built once and kept in
bench/.venvs until their inputs change.

- `launch`: kms-launch installed as users get it (a regular, non-editable wheel install), with every
  dependency pinned to the version in the project's own .venv. The editable install's import
  finder costs ~11 ms at every interpreter start, and would be measured as kms-launch's.
- `typer029`: the same, with Typer 0.29 (which needs and imports pydantic) instead of 0.28.
- `awscli`: the AWS CLI (v1, from PyPI), for the shell script operators write today.
- `vaultcli`: vault-cli from PyPI, which renders a Jinja template with secrets from Vault.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.common import ROOT, VENVS


@dataclass(frozen=True)
class Venv:
    path: Path

    @property
    def python(self) -> str:
        return str(self.path / "bin" / "python")

    def bin(self, name: str) -> str:
        return str(self.path / "bin" / name)


@dataclass(frozen=True)
class Setup:
    launch: Venv
    typer029: Venv
    awscli: Venv | None  # None: it did not install here (reason in `missing`)
    vaultcli: Venv | None
    missing: dict[str, str]


def setup() -> Setup:
    """Build (or reuse) every venv; a contender whose tool does not install is reported, not fatal."""
    VENVS.mkdir(parents=True, exist_ok=True)
    constraints = _project_constraints()
    launch = _launch_venv("launch", constraints, typer=None)
    typer029 = _launch_venv("typer029", constraints, typer="typer>=0.29,<0.30")
    missing: dict[str, str] = {}
    tools: dict[str, Venv | None] = {}
    for name, requirement in (("awscli", "awscli"), ("vaultcli", "vault-cli")):
        try:
            tools[name] = _tool_venv(name, [requirement])
        except subprocess.CalledProcessError as error:
            tools[name] = None
            missing[name] = f"pip install {requirement} failed: {_tail(error.stderr)}"
    return Setup(launch, typer029, tools["awscli"], tools["vaultcli"], missing)


def _project_constraints() -> Path:
    """The project .venv's versions of everything, as a pip constraints file."""
    frozen = subprocess.run(
        [sys.executable, "-m", "pip", "freeze", "--exclude-editable"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    path = VENVS / "constraints.txt"
    lines = [line for line in frozen.splitlines() if line and not line.startswith("#")]
    path.write_text("\n".join(lines) + "\n")
    return path


def _launch_venv(name: str, constraints: Path, typer: str | None) -> Venv:
    """kms-launch[all] from this tree, non-editable, on the project's dependency versions."""
    venv = Venv(VENVS / name)
    pinned = constraints.read_text()
    if typer is not None:  # let pip choose the Typer asked for, and what it needs (pydantic)
        pinned = "".join(
            line + "\n" for line in pinned.splitlines() if not line.lower().startswith("typer==")
        )
    stamp = _digest(pinned, typer or "", (ROOT / "pyproject.toml").read_text())
    if _stamp(venv) != stamp:
        _create(venv)
        own = venv.path / "constraints.txt"
        own.write_text(pinned)
        _pip(venv, "install", "-c", str(own), f"{ROOT}[all]")
        if typer is not None:
            _pip(venv, "install", "-c", str(own), typer)
        _write_stamp(venv, stamp)
    _refresh_launcher(venv)
    return venv


def _refresh_launcher(venv: Venv) -> None:
    """Reinstall kms-launch (not its dependencies) when the launcher's source has changed, so the
    benchmark always times this tree."""
    sources = sorted((ROOT / "launcher").rglob("*.py"))
    digest = _digest(*(f"{path.relative_to(ROOT)}\n{path.read_text()}" for path in sources))
    marker = venv.path / "launcher.digest"
    if marker.exists() and marker.read_text() == digest:
        return
    _pip(venv, "install", "--no-deps", "--force-reinstall", str(ROOT))
    marker.write_text(digest)


def _tool_venv(name: str, requirements: Sequence[str]) -> Venv:
    venv = Venv(VENVS / name)
    stamp = _digest(*requirements)
    if _stamp(venv) != stamp:
        _create(venv)
        _pip(venv, "install", *requirements)
        _write_stamp(venv, stamp)
    return venv


def _create(venv: Venv) -> None:
    print(f"bench: creating {venv.path.relative_to(ROOT)} (once)", file=sys.stderr)
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--clear", str(venv.path)], check=True)


def _pip(venv: Venv, *args: str) -> None:
    subprocess.run(
        [venv.python, "-m", "pip", "--quiet", "--disable-pip-version-check", *args],
        check=True,
        capture_output=True,
        text=True,
    )


def _stamp(venv: Venv) -> str | None:
    path = venv.path / "bench-stamp.json"
    try:
        return str(json.loads(path.read_text())["digest"])
    except (OSError, ValueError, KeyError):
        return None


def _write_stamp(venv: Venv, digest: str) -> None:
    (venv.path / "bench-stamp.json").write_text(json.dumps({"digest": digest}))


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def _tail(text: str | None, lines: int = 3) -> str:
    return " / ".join((text or "").strip().splitlines()[-lines:])
