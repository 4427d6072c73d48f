"""systemd/cosmian-kms-rotate.service and .timer under a real systemd 252 (Debian 12 in
systemd-nspawn): a rotated secret restarts the KMS, nothing else does.

The machine is set up as in test_systemd_unit.py (the README's systemd block, the stand-in server
as /usr/sbin/cosmian_kms), then the README's "Restart on rotation" block installs the timer. The
service is started directly rather than waiting for the timer; one test checks that the timer is
active and has the service scheduled. The `file` backend reads a secrets directory outside the
unit (KMS_SECRETS_DIR), since a file's version is its inode and mtime and each unit gets its own
copy of a systemd credential; the `vault` backend runs against OpenBao on the host's loopback.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.system import harness
from tests.system.test_systemd_unit import Kms, readme_installed

# The first test of a cold run builds the rootfs and installs into it (minutes, not seconds).
pytestmark = pytest.mark.timeout(900)

UNIT = "cosmian-kms.service"
ROTATE = "cosmian-kms-rotate.service"
TIMER = "cosmian-kms-rotate.timer"
RECORD = "/run/cosmian-kms/launch.json"
SECRETS = "/etc/cosmian/secrets"
FILE_CONFIG = '[db]\ndatabase_url = "postgresql://kms:secret://db-password@db.internal:5432/kms"\n'
VAULT_PATH = "rotation"  # a secret of this module's own: test_systemd_unit.py owns secret/kms
VAULT_CONFIG = f'[db]\ndatabase_url = "postgresql://kms:secret://secret/{VAULT_PATH}#db-password@db.internal:5432/kms"\n'


class Rotation:
    """The machine with both units installed, and what the tests do to them."""

    def __init__(self, kms: Kms) -> None:
        self.kms = kms
        self.machine = kms.machine
        self.cursor = ""

    def mark_journal(self) -> None:
        """journal() shows what comes after this point only."""
        out = self.machine.sh("journalctl -n 1 --show-cursor --no-pager").stdout
        self.cursor = out.rsplit("-- cursor: ", 1)[1].strip()

    def configure(self, *, env: str, config: str) -> None:
        self.machine.sh(f"systemctl reset-failed {ROTATE}", check=False)
        self.kms.configure(env=env, config=config)
        self.mark_journal()

    def start_kms(self) -> int:
        """Start the KMS and wait for the stand-in's report of this start; its PID."""
        self.machine.sh(f"systemctl start {UNIT}")
        return self.serving()["pid"]

    def serving(self) -> dict[str, Any]:
        """The stand-in's report from the current main PID (the file survives restarts, so the
        PID says whether it is the new one yet)."""
        pid = int(self.kms.state()["MainPID"])
        deadline = time.monotonic() + 30
        while (report := self.kms.report())["pid"] != pid:
            assert time.monotonic() < deadline, f"no report from pid {pid}: {report['pid']}"
            time.sleep(0.05)
        return report

    def check(self) -> dict[str, str]:
        """What the timer does: start the rotate service once; its state afterwards."""
        self.machine.sh(f"systemctl start {ROTATE}", check=False)
        return self.machine.show(ROTATE, "Result", "ExecMainStatus", "ActiveState",
                                 "ConditionResult")

    def main_pid(self) -> int:
        return int(self.kms.state()["MainPID"])

    def write_secret(self, name: str, value: str) -> None:
        """Replace a secret file as an operator's tooling would: a new file renamed over it. Mode
        0644 only because the KMS runs as a dynamic user here; a real one is a static user's."""
        self.machine.sh(f"mkdir -p {SECRETS} && cat > {SECRETS}/.{name}.new && "
                        f"chmod 0644 {SECRETS}/.{name}.new && mv {SECRETS}/.{name}.new {SECRETS}/{name}",
                        input=value)

    def journal(self, *, output: str = "cat") -> str:
        """The two units' journal since mark_journal()."""
        self.machine.sh("journalctl --flush --sync", check=False)
        return self.machine.sh(
            f"journalctl --no-pager -o {output} --after-cursor={shlex.quote(self.cursor)} "
            f"-u {ROTATE} -u {UNIT}").stdout


def file_env(settle: int | None = 0) -> str:
    return (f"KMS_SECRET_BACKEND=file\nKMS_SECRETS_DIR={SECRETS}\n"
            + ("" if settle is None else f"KMS_ROTATE_SETTLE={settle}\n"))


@pytest.fixture(scope="module")
def rotation(debian_rootfs: Path, wheels: tuple[Path, Path], openbao: Any,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rotation]:
    started = time.monotonic()
    openbao.put(VAULT_PATH, **{"db-password": "first-vault-password"})
    with readme_installed(debian_rootfs, wheels, openbao, tmp_path_factory.mktemp("machine")) as kms:
        machine = kms.machine
        for command in harness.readme_commands("### Restart on rotation"):
            machine.sh(f"cd /root/deploy && {command}")
        print(f"\nmachine booted, both units installed by the README's commands in "
              f"{time.monotonic() - started:.1f}s")
        yield Rotation(kms)
        machine.sh(f"systemctl stop {TIMER} {UNIT}", check=False)


def test_rotate_units_load_without_warnings_on_this_systemd(rotation: Rotation) -> None:
    rotation.machine.sh("systemctl daemon-reload")

    about_them = [line for line in rotation.kms.journal("_PID=1").splitlines()
                  if "cosmian-kms-rotate." in line and ("nknown" in line or "arning" in line)]
    verify = rotation.machine.sh(f"systemd-analyze verify /etc/systemd/system/{ROTATE} "
                                 f"/etc/systemd/system/{TIMER}", check=False)

    assert about_them == []
    assert verify.returncode == 0, verify.stderr
    assert verify.stderr == ""


def test_readme_install_leaves_the_timer_active_with_the_check_scheduled(rotation: Rotation) -> None:
    timer = rotation.machine.show(TIMER, "ActiveState", "UnitFileState", "Unit",
                                  "NextElapseUSecMonotonic")

    assert timer["ActiveState"] == "active"
    assert timer["UnitFileState"] == "enabled"
    assert timer["Unit"] == ROTATE
    assert timer["NextElapseUSecMonotonic"] not in ("", "0", "infinity")
    listed = rotation.machine.sh(f"systemctl list-timers --no-legend {TIMER}").stdout
    assert ROTATE in listed


def test_rotate_service_sandbox_scores_at_most_1_5_in_systemd_analyze_security(rotation: Rotation) -> None:
    result = rotation.machine.sh(f"systemd-analyze security {ROTATE}", check=False)

    score = result.stdout.rsplit(f"Overall exposure level for {ROTATE}: ", 1)[1].split()[0]
    print(f"systemd-analyze security {ROTATE}: {score}")
    assert float(score) <= 1.5


def test_changed_secret_file_restarts_the_kms_with_the_new_value(rotation: Rotation) -> None:
    rotation.write_secret("db-password", "first-file-password")
    rotation.configure(env=file_env(), config=FILE_CONFIG)
    before = rotation.start_kms()
    rotation.write_secret("db-password", "rotated-file-password")

    state = rotation.check()

    assert (state["Result"], state["ExecMainStatus"]) == ("success", "0"), rotation.journal()
    after = rotation.serving()
    assert after["pid"] != before
    assert after["pid"] == rotation.main_pid()
    assert "postgresql://kms:rotated-file-password@db.internal" in after["config"]["text"]
    assert "changed: db.database_url: secret://db-password: version" in rotation.journal()


def test_unchanged_secrets_leave_the_kms_running(rotation: Rotation) -> None:
    rotation.write_secret("db-password", "steady-file-password")
    rotation.configure(env=file_env(), config=FILE_CONFIG)
    before = rotation.start_kms()

    first, second = rotation.check(), rotation.check()

    assert (first["Result"], first["ExecMainStatus"]) == ("success", "0")
    assert (second["Result"], second["ExecMainStatus"]) == ("success", "0")
    assert rotation.main_pid() == before
    assert rotation.serving()["pid"] == before


def test_changed_config_restarts_the_kms(rotation: Rotation) -> None:
    rotation.write_secret("db-password", "file-password")
    rotation.configure(env=file_env(), config=FILE_CONFIG)
    before = rotation.start_kms()
    rotation.kms.write("/etc/cosmian/kms.toml", FILE_CONFIG + '[http]\nport = 9999\n')

    rotation.check()

    after = rotation.serving()
    assert after["pid"] != before
    assert "port = 9999" in after["config"]["text"]


def test_rotation_younger_than_the_settle_time_waits(rotation: Rotation) -> None:
    rotation.write_secret("db-password", "first-file-password")
    rotation.configure(env=file_env(settle=None), config=FILE_CONFIG)  # the unit's 60 s
    before = rotation.start_kms()
    rotation.write_secret("db-password", "just-rotated-file-password")

    state = rotation.check()

    assert (state["Result"], state["ExecMainStatus"]) == ("success", "0")
    assert rotation.main_pid() == before
    assert "settling (younger than --settle 60s): db.database_url" in rotation.journal()


def test_failed_check_fails_the_rotate_unit_and_leaves_the_kms_alone(rotation: Rotation) -> None:
    rotation.write_secret("db-password", "file-password")
    rotation.configure(env=file_env(), config=FILE_CONFIG)
    before = rotation.start_kms()
    rotation.machine.sh(f"rm {SECRETS}/db-password")

    state = rotation.check()

    assert (state["ActiveState"], state["Result"], state["ExecMainStatus"]) == ("failed", "exit-code", "65")
    assert ROTATE in rotation.machine.sh("systemctl --failed --no-legend").stdout
    assert rotation.main_pid() == before
    assert rotation.kms.state()["ActiveState"] == "active"


def test_nothing_runs_while_the_kms_is_down(rotation: Rotation) -> None:
    rotation.write_secret("db-password", "file-password")
    rotation.configure(env=file_env(), config=FILE_CONFIG)  # stops the KMS
    assert not rotation.machine.path(RECORD).exists()

    state = rotation.check()

    assert state["ConditionResult"] == "no"
    assert state["Result"] == "success"
    assert rotation.kms.state()["ActiveState"] == "inactive"


def test_new_kv_version_in_openbao_restarts_the_kms(rotation: Rotation, openbao: Any) -> None:
    openbao.put(VAULT_PATH, **{"db-password": "vault-password-before"})
    rotation.configure(env=rotation.kms.vault_env() + "KMS_ROTATE_SETTLE=0\n", config=VAULT_CONFIG)
    before = rotation.start_kms()
    unchanged = rotation.check()
    assert rotation.main_pid() == before
    openbao.put(VAULT_PATH, **{"db-password": "vault-password-rotated"})

    state = rotation.check()

    assert (unchanged["Result"], state["Result"], state["ExecMainStatus"]) == ("success", "success", "0")
    after = rotation.serving()
    assert after["pid"] != before
    assert "postgresql://kms:vault-password-rotated@db.internal" in after["config"]["text"]
    excerpt = rotation.journal(output="short-precise")
    print(f"\njournalctl -u {ROTATE} -u {UNIT}:\n{excerpt}")
    assert f"secret://secret/{VAULT_PATH}#db-password: version" in excerpt
    assert "vault-password" not in excerpt
