"""systemd/cosmian-kms.service under a real systemd 252 as PID 1 (Debian 12 in systemd-nspawn),
installed by the README's own commands, kms-launch installed offline from wheels built outside.

The unit runs as shipped. Its program /usr/sbin/cosmian_kms is the stand-in server
(tests/system/standin_server.py), since the real KMS cannot run here; everything else a test
varies is what an operator varies: /etc/cosmian/kms-launch.env, /etc/cosmian/kms.toml, the
credentials, and a drop-in only where the check is about one (extra credentials, the system call
filter in kill mode). OpenBao runs on the host's loopback, which the machine shares.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.system import harness
from tests.system.conftest import Blackhole
from tests.system.machine import Machine, booted

# The first test of a cold run builds the rootfs and installs into it (minutes, not seconds).
pytestmark = pytest.mark.timeout(900)

UNIT = "cosmian-kms.service"
DROPINS = "/etc/systemd/system/cosmian-kms.service.d"
STATE = "/var/lib/private/cosmian-kms"  # StateDirectory= of a DynamicUser= service
STANDIN = Path(__file__).parent / "standin_server.py"
DB_PASSWORD = "db-password-from-openbao-7Qx"
MAX_EXPOSURE = 1.5
RESTART_SEC = 2.0
PERMANENT = {65: "a reference to a secret that does not exist",
             66: "a config that cannot be read",
             77: "a token the vault refuses",
             78: "references but no backend"}


@dataclass
class Kms:
    """The machine with the unit installed, plus what a test needs to drive it."""

    machine: Machine
    vault_url: str
    vault_token: str
    env_example: str

    def configure(self, *, env: str, config: str, dropins: dict[str, str] | None = None) -> None:
        """Stop the unit, then set the operator's files and this test's drop-ins."""
        self.machine.sh(f"systemctl stop {UNIT}; systemctl reset-failed {UNIT}; "
                        f"rm -rf {DROPINS}/test-*.conf {STATE}/standin-*.json", check=False)
        self.write("/etc/cosmian/kms-launch.env", env)
        self.write("/etc/cosmian/kms.toml", config)
        for name, text in (dropins or {}).items():
            self.write(f"{DROPINS}/test-{name}.conf", text)
        self.machine.sh("systemctl daemon-reload")

    def write(self, inside: str, text: str) -> None:
        path = self.machine.path(inside)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(0o644)

    def vault_env(self, address: str | None = None, timeout: float | None = None) -> str:
        """The example environment file, edited as the README says: backend and address."""
        text = self.env_example.replace(
            "VAULT_ADDR=https://vault.example.internal:8200", f"VAULT_ADDR={address or self.vault_url}")
        assert text != self.env_example
        assert "KMS_SECRET_BACKEND=vault" in text
        return text + (f"KMS_LAUNCH_TIMEOUT={timeout}\n" if timeout else "")

    def encrypt_credential(self, name: str, value: str) -> None:
        self.machine.sh(f"systemd-creds encrypt --with-key=host --name={name} - "
                        f"/etc/credstore.encrypted/{name}", input=value)

    def start(self) -> None:
        self.machine.sh(f"systemctl start {UNIT}")

    def state(self) -> dict[str, str]:
        return self.machine.show(
            UNIT, "ActiveState", "SubState", "Result", "MainPID", "NRestarts", "ExecMainCode",
            "ExecMainStatus", "ExecMainStartTimestampMonotonic", "ExecMainExitTimestampMonotonic")

    def wait_for(self, condition: Callable[[dict[str, str]], bool], timeout: float = 30) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while True:
            state = self.state()
            if condition(state):
                return state
            assert time.monotonic() < deadline, f"{UNIT} never got there: {state}"
            time.sleep(0.05)

    def report(self, name: str = "standin-report.json", timeout: float = 30) -> dict[str, Any]:
        """The stand-in's report, once it is up (or its stop report)."""
        path = self.machine.path(f"{STATE}/{name}")
        deadline = time.monotonic() + timeout
        while not path.exists():
            assert time.monotonic() < deadline, f"no {name}: {self.state()} {self.journal()}"
            time.sleep(0.05)
        return json.loads(path.read_text())

    def journal(self, *args: str) -> str:
        self.machine.sh("journalctl --flush --sync", check=False)
        return self.machine.sh("journalctl -b --no-pager -o cat " + " ".join(args)).stdout


def vault_config(**extra: str) -> str:
    lines = ['[db]', 'database_url = "postgresql://kms:secret://secret/kms#db-password@db.internal:5432/kms"']
    for table, body in extra.items():
        lines += [f"[{table}]", body]
    return "\n".join(lines) + "\n"


def run_readme_install(machine: Machine, vault_token: str, edit_env: Callable[[], None]) -> list[str]:
    """Run the README's systemd block inside the machine, in a directory holding a copy of the
    repository's systemd/ and the test's kms.toml. What differs from the README, and why:
    - pip finds packages in the wheelhouses (PIP_NO_INDEX, PIP_FIND_LINKS): the machine is offline;
    - the token comes from stdin instead of systemd-ask-password, which needs a terminal;
    - `systemd-creds encrypt --with-key=host`: there is no TPM2 here (auto would pick the same);
    - "then edit it" is done by the test, right after that line."""
    ran = []
    for command in harness.readme_commands("### systemd"):
        if command.startswith("systemd-ask-password"):
            _prompt, _, encrypt = command.partition("|")
            assert "systemd-creds encrypt --name=vault-token -" in encrypt, command
            command = "cat |" + encrypt.replace("systemd-creds encrypt", "systemd-creds encrypt --with-key=host")
        machine.sh("export PIP_NO_INDEX=1 PIP_FIND_LINKS='/opt/wheelhouse /opt/wheelhouse-checkout'; "
                   f"cd /root/deploy && {command}", input=vault_token, timeout=300)
        ran.append(command)
        if "kms-launch.env" in command and "then edit it" in command:
            edit_env()
    return ran


@contextlib.contextmanager
def readme_installed(debian_rootfs: Path, wheels: tuple[Path, Path], openbao: Any,
                     workdir: Path) -> Iterator[Kms]:
    """A booted Debian 12 with the stand-in as /usr/sbin/cosmian_kms and the unit installed
    and started by the README's own commands, on the vault backend against `openbao`."""
    house, checkout = wheels
    with booted(debian_rootfs, workdir, {house: "/opt/wheelhouse", checkout: "/opt/wheelhouse-checkout"}) as machine:
        deploy = machine.path("/root/deploy")
        shutil.copytree(harness.ROOT / "systemd", deploy / "systemd")
        (deploy / "kms.toml").write_text(vault_config())
        server = machine.path("/usr/sbin/cosmian_kms")
        shutil.copy(STANDIN, server)
        server.chmod(0o755)
        env_example = (harness.ROOT / "systemd" / "kms-launch.env.example").read_text()
        kms = Kms(machine, openbao.url, openbao.token, env_example)
        run_readme_install(machine, openbao.token,
                           lambda: kms.write("/etc/cosmian/kms-launch.env", kms.vault_env()))
        yield kms


@pytest.fixture(scope="module")
def kms(debian_rootfs: Path, wheels: tuple[Path, Path], openbao: Any,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kms]:
    started = time.monotonic()
    openbao.put("kms", **{"db-password": DB_PASSWORD})
    with readme_installed(debian_rootfs, wheels, openbao, tmp_path_factory.mktemp("machine")) as kms:
        print(f"\nunit installed and started by the README's commands in {time.monotonic() - started:.1f}s")
        yield kms
        kms.machine.sh(f"systemctl stop {UNIT}", check=False)


@pytest.fixture
def vault_unit(kms: Kms) -> Kms:
    """The unit as the README leaves it: vault backend on OpenBao, the token an encrypted
    credential, nothing else."""
    kms.configure(env=kms.vault_env(), config=vault_config())
    return kms


def test_readme_install_enables_and_starts_the_unit(kms: Kms) -> None:
    # The fixture ran the README's block, whose last command is `systemctl enable --now`.
    assert kms.machine.sh(f"systemctl is-enabled {UNIT}").stdout.strip() == "enabled"
    assert kms.report()["pid"] == int(kms.state()["MainPID"])


def test_unit_loads_without_warnings_on_this_systemd(kms: Kms) -> None:
    version = kms.machine.sh("systemctl --version").stdout.split()[1]
    kms.machine.sh("systemctl daemon-reload")

    about_the_unit = [line for line in kms.journal("_PID=1").splitlines() if "cosmian-kms.service:" in line]
    verify = kms.machine.sh(f"systemd-analyze verify /etc/systemd/system/{UNIT}", check=False)

    print(f"systemd {version}")
    assert about_the_unit == []
    assert verify.returncode == 0, verify.stderr
    assert verify.stderr == ""


def test_server_is_the_main_pid_and_reads_a_sealed_memfd(vault_unit: Kms) -> None:
    vault_unit.start()

    report = vault_unit.report()
    state = vault_unit.state()

    assert report["pid"] == int(state["MainPID"])
    assert state["ActiveState"] == "active"
    assert state["SubState"] == "running"
    assert report["argv"] == ["/usr/sbin/cosmian_kms", "-c", report["config"]["path"]]
    assert report["config"]["link"].startswith("/memfd:kms.toml")
    seals = 0x1 | 0x2 | 0x4 | 0x8  # F_SEAL_SEAL | SHRINK | GROW | WRITE
    assert report["config"]["seals"] & seals == seals


def test_vault_token_as_encrypted_credential_resolves_against_openbao(vault_unit: Kms) -> None:
    vault_unit.start()

    report = vault_unit.report()

    assert f"postgresql://kms:{DB_PASSWORD}@db.internal:5432/kms" in report["config"]["text"]
    assert "secret://" not in report["config"]["text"]
    # The token exists only in /etc/credstore.encrypted/vault-token, encrypted (not in the
    # environment file, not in the unit): kms-launch read it from $CREDENTIALS_DIRECTORY, where
    # systemd decrypted it. The server's environment has neither token nor backend selector.
    assert vault_unit.vault_token not in vault_unit.machine.path("/etc/cosmian/kms-launch.env").read_text()
    encrypted = vault_unit.machine.path("/etc/credstore.encrypted/vault-token").read_bytes()
    assert vault_unit.vault_token.encode() not in encrypted
    assert "VAULT_TOKEN" not in report["environ"]
    assert "KMS_SECRET_BACKEND" not in report["environ"]


def test_no_secret_reaches_the_journal(vault_unit: Kms) -> None:
    vault_unit.start()
    vault_unit.report()

    journal = vault_unit.journal("-u", UNIT)

    assert "serving as pid" in journal
    assert DB_PASSWORD not in journal
    assert vault_unit.vault_token not in journal


def test_journal_tags_the_servers_lines_cosmian_kms(vault_unit: Kms) -> None:
    vault_unit.start()
    pid = vault_unit.report()["pid"]

    deadline = time.monotonic() + 10
    while f"serving as pid {pid}" not in (tagged := vault_unit.journal("-t", "cosmian_kms")):
        assert time.monotonic() < deadline, tagged
        time.sleep(0.1)
    assert f"serving as pid {pid}" not in vault_unit.journal("-t", "kms-launch")


def test_running_unit_scores_at_most_1_5_in_systemd_analyze_security(vault_unit: Kms) -> None:
    vault_unit.start()
    vault_unit.report()

    result = vault_unit.machine.sh(f"systemd-analyze security {UNIT}", check=False)

    match = re.search(rf"Overall exposure level for {UNIT}: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    print(f"systemd-analyze security (running unit): {match.group(1)}")
    assert float(match.group(1)) <= MAX_EXPOSURE


def test_systemctl_stop_reaches_the_server(vault_unit: Kms) -> None:
    vault_unit.start()
    pid = vault_unit.report()["pid"]

    vault_unit.machine.sh(f"systemctl stop {UNIT}")

    assert vault_unit.report("standin-stopped.json") == {"signal": 15, "pid": pid}
    state = vault_unit.state()
    assert (state["ActiveState"], state["Result"]) == ("inactive", "success")


def test_stop_during_resolution_leaves_the_unit_inactive_not_failed(kms: Kms, blackhole: Blackhole) -> None:
    kms.configure(env=kms.vault_env(blackhole.url, timeout=60), config=vault_config())
    kms.start()
    blackhole.wait_for_a_client()  # kms-launch is waiting on the vault

    stopped = time.monotonic()
    kms.machine.sh(f"systemctl stop {UNIT}")
    took = time.monotonic() - stopped

    state = kms.state()
    assert (state["ActiveState"], state["Result"]) == ("inactive", "success"), state
    assert (state["ExecMainCode"], state["ExecMainStatus"]) == ("2", "15")  # killed by SIGTERM
    assert took < 5


def test_load_credential_encrypted_and_load_credential_are_delivered(kms: Kms) -> None:
    # The file backend without KMS_SECRETS_DIR reads $CREDENTIALS_DIRECTORY: one encrypted
    # credential, one plain file credential, both added by a drop-in as an operator would.
    kms.encrypt_credential("db-password", "db-password-from-an-encrypted-credential")
    kms.write("/etc/cosmian/api-token", "api-token-from-a-plain-credential\n")
    kms.configure(
        env="KMS_SECRET_BACKEND=file\n",
        config='[db]\ndatabase_url = "postgresql://kms:secret://db-password@db/kms"\n'
               '[http]\napi_token_id = "secret://api-token"\n',
        dropins={"credentials": "[Service]\nLoadCredentialEncrypted=db-password\n"
                                "LoadCredential=api-token:/etc/cosmian/api-token\n"},
    )
    kms.start()

    report = kms.report()

    assert "postgresql://kms:db-password-from-an-encrypted-credential@db/kms" in report["config"]["text"]
    assert 'api_token_id = "api-token-from-a-plain-credential"' in report["config"]["text"]


def permanent_failure(kms: Kms, code: int) -> None:
    """Set up the unit to fail with `code`, for real."""
    if code == 65:
        kms.configure(env="KMS_SECRET_BACKEND=file\n",
                      config='[db]\ndatabase_url = "secret://no-such-credential"\n')
    elif code == 66:
        kms.configure(env=kms.vault_env(), config=vault_config())
        kms.machine.sh("chmod 0000 /etc/cosmian/kms.toml")  # the service's user cannot read it
    elif code == 77:
        kms.encrypt_credential("vault-token", "a-token-openbao-never-issued")
        kms.configure(env=kms.vault_env(), config=vault_config())
    elif code == 78:
        kms.configure(env="", config=vault_config())


@pytest.fixture
def restore_vault_token(kms: Kms) -> Iterator[None]:
    yield
    kms.encrypt_credential("vault-token", kms.vault_token)


@pytest.mark.parametrize("code", sorted(PERMANENT))
def test_permanent_failure_is_not_restarted(kms: Kms, code: int,
                                            restore_vault_token: None) -> None:
    permanent_failure(kms, code)
    kms.start()

    state = kms.wait_for(lambda s: s["ActiveState"] in ("failed", "inactive") or s["SubState"] == "auto-restart")

    assert (state["ActiveState"], state["Result"], state["ExecMainStatus"]) == ("failed", "exit-code", str(code)), PERMANENT[code]
    assert state["NRestarts"] == "0"
    # kms-launch's own error line is tagged like the server's.
    assert "kms-launch:" in kms.journal("-t", "cosmian_kms", "-n", "20")


def test_unavailable_backend_is_restarted_every_restart_sec(kms: Kms, refused_port: int) -> None:
    kms.configure(env=kms.vault_env(f"http://127.0.0.1:{refused_port}", timeout=1), config=vault_config())
    kms.start()

    attempts: dict[str, str] = {}  # start timestamp -> exit timestamp, in microseconds
    deadline = time.monotonic() + 30
    while len(attempts) < 3:
        state = kms.state()
        assert state["ActiveState"] != "failed", state
        start, end = state["ExecMainStartTimestampMonotonic"], state["ExecMainExitTimestampMonotonic"]
        if int(end) > int(start):
            assert state["ExecMainStatus"] == "69", state
            attempts[start] = end
        assert time.monotonic() < deadline, attempts
        time.sleep(0.05)
    kms.machine.sh(f"systemctl stop {UNIT}")

    starts = sorted(attempts)
    gaps = [(int(starts[i + 1]) - int(attempts[starts[i]])) / 1e6 for i in range(len(starts) - 1)]
    print(f"exit 69: restarted after {', '.join(f'{gap:.2f}s' for gap in gaps)}")
    assert int(kms.state()["NRestarts"]) >= 2
    assert all(gap >= RESTART_SEC for gap in gaps), gaps


@pytest.fixture
def kill_mode() -> dict[str, str]:
    # SystemCallErrorNumber= emptied: a call outside SystemCallFilter= kills the process with
    # SIGSYS instead of failing with EPERM, so anything kms-launch needs and the filter lacks
    # shows up as a killed unit, not as a quietly handled error.
    return {"kill-mode": "[Service]\nSystemCallErrorNumber=\n"}


def test_system_call_filter_in_kill_mode_kills_nothing_on_the_way_to_the_server(
    kms: Kms, kill_mode: dict[str, str]
) -> None:
    kms.configure(env=kms.vault_env(), config=vault_config(), dropins=kill_mode)
    # systemd shows "kill" as its internal SECCOMP_ERROR_NUMBER_KILL, INT_MAX - 1.
    assert kms.machine.show(UNIT, "SystemCallErrorNumber")["SystemCallErrorNumber"] == "2147483646"
    kms.start()

    report = kms.report()

    assert report["pid"] == int(kms.state()["MainPID"])
    assert DB_PASSWORD in report["config"]["text"]


def test_system_call_filter_in_kill_mode_kills_nothing_on_the_way_to_an_error(
    kms: Kms, kill_mode: dict[str, str], blackhole: Blackhole
) -> None:
    # A failed resolution and a stop during resolution: error reporting and the signal path.
    kms.configure(env="KMS_SECRET_BACKEND=file\n",
                  config='[db]\ndatabase_url = "secret://no-such-credential"\n', dropins=kill_mode)
    kms.start()
    state = kms.wait_for(lambda s: s["ActiveState"] in ("failed", "inactive"))
    assert (state["Result"], state["ExecMainStatus"]) == ("exit-code", "65"), state

    kms.configure(env=kms.vault_env(blackhole.url, timeout=60), config=vault_config(), dropins=kill_mode)
    kms.start()
    blackhole.wait_for_a_client()
    kms.machine.sh(f"systemctl stop {UNIT}")
    state = kms.state()
    assert (state["Result"], state["ExecMainCode"], state["ExecMainStatus"]) == ("success", "2", "15"), state
