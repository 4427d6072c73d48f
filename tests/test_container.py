"""container/Containerfile, checked statically (tests/system/test_podman_image.py builds and runs
it for real where podman is installed): its ENTRYPOINT is exec-form kms-launch in front of
cosmian_kms, and that very argv runs the KMS when executed."""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).parent.parent
CONTAINERFILE = ROOT / "container" / "Containerfile"
STANDIN = Path(__file__).parent / "standin.py"
CONFIG_IN_IMAGE = "/etc/cosmian/kms.toml"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, comments dropped and continuation lines joined."""
    found: list[tuple[str, str]] = []
    pending = ""
    for raw in CONTAINERFILE.read_text().splitlines():
        line = raw.strip()
        if line.startswith("#"):
            continue  # a comment, also between continuation lines
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = (pending + line).strip()
        pending = ""
        if line:
            instruction, _, arguments = line.partition(" ")
            found.append((instruction.upper(), arguments.strip()))
    return found


def last(instruction: str) -> str:
    values = [arguments for name, arguments in instructions() if name == instruction]
    assert values, f"the Containerfile has no {instruction}"
    return values[-1]


def entrypoint() -> list[str]:
    """The ENTRYPOINT in effect (the last one), which must be exec form: a JSON array."""
    argv = json.loads(last("ENTRYPOINT"))
    assert isinstance(argv, list)
    assert all(isinstance(arg, str) for arg in argv)
    return argv


def image_path() -> list[str]:
    """PATH as the image's last ENV PATH= sets it."""
    envs = [arguments for name, arguments in instructions() if name == "ENV"]
    paths = [m.group(1) for env in envs if (m := re.match(r"PATH=(\S+)", env))]
    assert paths, "the Containerfile sets no PATH"
    return paths[-1].split(":")


def test_entrypoint_is_exec_form() -> None:
    assert last("ENTRYPOINT").startswith("[")
    assert entrypoint()  # parses as a JSON array of strings: no shell between runtime and kms


def test_entrypoint_runs_kms_launch_in_front_of_cosmian_kms() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]

    assert entrypoint() == ["kms-launch", "-c", CONFIG_IN_IMAGE, "--", "cosmian_kms"]
    module, _, function = scripts["kms-launch"].partition(":")
    assert module.split(".")[0] == "launcher"
    assert callable(getattr(importlib.import_module(module), function))


def test_backend_is_chosen_at_run_time_not_baked_into_the_image() -> None:
    assert "--backend" not in entrypoint()
    assert not any(
        re.match(r"KMS_SECRET_BACKEND\b", arguments)
        for name, arguments in instructions()
        if name in ("ENV", "ARG")
    )


def test_kms_launch_with_every_backend_is_installed_on_the_image_path() -> None:
    runs = [arguments for name, arguments in instructions() if name == "RUN"]
    venvs = [m.group(1) for run in runs if (m := re.search(r"python3 -m venv (\S+)", run))]
    build_args = dict(
        arguments.split("=", 1) for name, arguments in instructions() if name == "ARG"
    )

    assert len(venvs) == 1
    assert build_args["KMS_LAUNCH"].endswith("[all]")
    assert any(
        f'{venvs[0]}/bin/pip install --no-cache-dir "${{KMS_LAUNCH}}"' in run for run in runs
    )
    assert f"{venvs[0]}/bin" in image_path()
    assert "/usr/bin" in image_path()  # where the official image puts cosmian_kms


def test_entrypoint_argv_execs_cosmian_kms_with_the_resolved_config(
    tmp_path: Path, clean_env: dict[str, str]
) -> None:
    # Stand-ins on PATH: kms-launch is this checkout's console script, cosmian_kms the stand-in
    # server; only the config path differs from the image's argv.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "kms-launch").symlink_to(Path(sys.executable).with_name("kms-launch"))
    kms = bin_dir / "cosmian_kms"
    kms.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{STANDIN}" "$@"\n')
    kms.chmod(0o755)
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "api-token").write_text("token-from-a-mounted-secret\n")
    config = tmp_path / "kms.toml"
    config.write_text('[http]\nport = 9998\napi_token_id = "secret://api-token"\n')
    argv = [str(config) if arg == CONFIG_IN_IMAGE else arg for arg in entrypoint()]
    assert argv != entrypoint()
    report = tmp_path / "report.json"
    env = {
        **clean_env,
        "PATH": f"{bin_dir}{os.pathsep}/usr/bin:/bin",
        "KMS_SECRET_BACKEND": "file",
        "KMS_SECRETS_DIR": str(secrets),
        "STANDIN_REPORT": str(report),
    }

    process = subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    _, stderr = process.communicate(timeout=60)

    assert process.returncode == 0, stderr
    received = json.loads(report.read_text())
    assert received["pid"] == process.pid  # exec'd in place: the KMS keeps the entrypoint's PID
    assert received["argv"][1:3] == ["-c", received["config"]["path"]]
    assert received["parsed"]["http"]["api_token_id"] == "token-from-a-mounted-secret"
    assert "KMS_SECRET_BACKEND" not in received["environ"]
