"""systemd/cosmian-kms.service.d/restart-backoff.conf on a systemd new enough for it: Debian 13
(systemd 257) in systemd-nspawn, the unit and the drop-in installed by the README's lines.

Only the restart timing is under test here, and it depends on the exit status alone: the unit's
program is replaced (a test drop-in) by one that exits 69 like kms-launch with an unreachable
vault, since kms-launch's wheels are built for the Python of Debian 12. The rest of the unit,
sandbox included, is as shipped.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator

import pytest

from tests.system import harness
from tests.system.machine import Machine, booted

# The first test of a cold run builds this rootfs (minutes, not seconds).
pytestmark = pytest.mark.timeout(900)

UNIT = "cosmian-kms.service"
SUITE = "trixie"
INCLUDE = ("systemd", "systemd-sysv", "dbus")
BACKOFF_LINE = "#install -D -m 0644 -t /etc/systemd/system/cosmian-kms.service.d/ systemd/cosmian-kms.service.d/restart-backoff.conf"


@pytest.fixture(scope="module")
def machine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Machine]:
    reason = harness.missing_privileges(harness.ROOTFS_TOOLS)
    if reason:
        pytest.skip(reason)
    started = time.monotonic()
    rootfs = harness.rootfs(SUITE, INCLUDE)
    print(f"\nrootfs {rootfs.name}: ready in {time.monotonic() - started:.1f}s")
    with booted(rootfs, tmp_path_factory.mktemp("machine-254"), {}) as machine:
        shutil.copytree(harness.ROOT / "systemd", machine.path("/root/deploy/systemd"))
        # The README's commands for the unit and, uncommented as it says for 254 and later, the
        # drop-in; then the credential the unit loads, so that it can start at all.
        readme = (harness.ROOT / "README.md").read_text()
        assert BACKOFF_LINE in readme
        commands = [c for c in harness.readme_commands("### systemd")
                    if c.startswith("install -m 0644 systemd/cosmian-kms.service ")]
        for command in [*commands, BACKOFF_LINE.lstrip("#"), "install -d -m 0700 /etc/credstore.encrypted"]:
            machine.sh(f"cd /root/deploy && {command}")
        machine.sh("systemd-creds encrypt --with-key=host --name=vault-token - "
                   "/etc/credstore.encrypted/vault-token", input="unused")
        override = machine.path(f"/etc/systemd/system/{UNIT}.d/test-exit-69.conf")
        override.write_text("[Service]\nExecStart=\nExecStart=/bin/sh -c 'exit 69'\n")
        machine.sh("systemctl daemon-reload")
        yield machine
        machine.sh(f"systemctl stop {UNIT}", check=False)


def systemd_version(machine: Machine) -> int:
    return int(machine.sh("systemctl --version").stdout.split()[1])


def test_this_systemd_is_new_enough_for_the_dropin(machine: Machine) -> None:
    assert systemd_version(machine) >= 254


def test_unit_and_dropin_load_without_warnings(machine: Machine) -> None:
    machine.sh("journalctl --flush --sync", check=False)
    journal = machine.sh("journalctl -b --no-pager -o cat _PID=1").stdout
    shown = machine.show(UNIT, "RestartSteps", "RestartMaxDelayUSec", "RestartUSec")

    assert [line for line in journal.splitlines() if f"{UNIT}" in line and "Unknown" in line] == []
    assert shown == {"RestartSteps": "8", "RestartMaxDelayUSec": "5min", "RestartUSec": "2s"}


def test_exit_69_is_restarted_with_growing_delays(machine: Machine) -> None:
    machine.sh(f"systemctl start {UNIT}")
    attempts: dict[int, int] = {}  # start -> exit, monotonic microseconds
    deadline = time.monotonic() + 60
    while len(attempts) < 3:
        state = machine.show(UNIT, "ExecMainStartTimestampMonotonic", "ExecMainExitTimestampMonotonic",
                             "ExecMainStatus", "ActiveState")
        start, end = int(state["ExecMainStartTimestampMonotonic"]), int(state["ExecMainExitTimestampMonotonic"])
        if end > start:
            assert state["ExecMainStatus"] == "69", state
            attempts[start] = end
        assert state["ActiveState"] != "failed", state
        assert time.monotonic() < deadline, attempts
        time.sleep(0.05)
    machine.sh(f"systemctl stop {UNIT}")

    starts = sorted(attempts)
    gaps = [(starts[i + 1] - attempts[starts[i]]) / 1e6 for i in range(len(starts) - 1)]
    print(f"systemd {systemd_version(machine)}, exit 69: restarted after {', '.join(f'{g:.2f}s' for g in gaps)}")
    # 2 s growing geometrically to 5 min over 8 steps: 2 s, 3.7 s, 7 s, ...
    assert gaps[0] >= 2
    assert gaps[1] >= 1.5 * gaps[0]
