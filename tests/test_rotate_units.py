"""systemd/cosmian-kms-rotate.service and .timer read as files: the check runs with exactly the
KMS unit's credentials, environment file, launcher and config, against the record the KMS unit's
RuntimeDirectory= holds. (tests/system/test_rotation.py runs them under a real systemd.)"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

ROOT = Path(__file__).parent.parent
KMS = ROOT / "systemd" / "cosmian-kms.service"
ROTATE = ROOT / "systemd" / "cosmian-kms-rotate.service"
TIMER = ROOT / "systemd" / "cosmian-kms-rotate.timer"
CREDENTIAL_SETTINGS = ("LoadCredentialEncrypted=", "LoadCredential=", "SetCredential")


def settings(path: Path, name: str) -> list[str]:
    """Values of `name=` in the unit, continuation lines joined."""
    text = re.sub(r"\\\n", " ", path.read_text())
    return [line.split("=", 1)[1] for line in text.splitlines() if line.startswith(f"{name}=")]


def credential_lines(path: Path) -> list[str]:
    """Credential settings, the commented-out alternatives included: an operator uncomments the
    same line in both units."""
    return [line.lstrip("#") for line in path.read_text().splitlines()
            if line.lstrip("#").startswith(CREDENTIAL_SETTINGS)]


def check_command() -> list[str]:
    (start,) = settings(ROTATE, "ExecStart")
    script = shlex.split(start)[2]
    return shlex.split(script.split(";", 1)[0])


def test_rotate_service_loads_the_same_credentials_as_the_kms() -> None:
    assert credential_lines(ROTATE) == credential_lines(KMS)
    assert credential_lines(KMS)


def test_rotate_service_reads_the_kms_environment_file() -> None:
    assert settings(ROTATE, "EnvironmentFile") == settings(KMS, "EnvironmentFile")


def test_check_uses_the_kms_launcher_and_config() -> None:
    (kms_start,) = settings(KMS, "ExecStart")
    kms_argv = shlex.split(kms_start)
    check = check_command()

    assert check[0] == kms_argv[0]
    assert check[check.index("-c") + 1] == kms_argv[kms_argv.index("-c") + 1]
    assert "--check" in check


def test_check_compares_with_the_record_in_the_kms_runtime_directory() -> None:
    (directory,) = settings(KMS, "RuntimeDirectory")
    record = f"/run/{directory}/launch.json"
    check = check_command()

    assert check[check.index("--against") + 1] == record
    assert settings(ROTATE, "ConditionPathExists") == [record]


def test_only_exit_3_restarts_and_only_the_kms() -> None:
    (start,) = settings(ROTATE, "ExecStart")
    cases = dict(re.findall(r"(\S+)\) (.*?) ;;", start))

    assert cases == {"0": "exit 0", "3": "exec systemctl try-restart cosmian-kms.service",
                     "*": "exit $$status"}


def test_settle_has_a_default_the_environment_file_can_override() -> None:
    text = ROTATE.read_text()

    assert settings(ROTATE, "Environment") == ["KMS_ROTATE_SETTLE=60"]
    # systemd: settings from EnvironmentFile= override Environment=, whatever their order.
    assert '--settle "${KMS_ROTATE_SETTLE}"' in text


def test_timer_fires_on_a_fresh_host_and_then_after_each_check() -> None:
    assert settings(TIMER, "OnActiveSec") == ["5min"]
    assert settings(TIMER, "OnUnitActiveSec") == ["5min"]
    assert settings(TIMER, "RandomizedDelaySec") == ["1min"]
    assert settings(TIMER, "WantedBy") == ["timers.target"]
