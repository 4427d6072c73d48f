"""systemd/cosmian-kms.service: it loads cleanly, it is hardened, it starts the KMS through
kms-launch once per start, and its restart policy agrees with the launcher's exit codes."""

from __future__ import annotations

import ctypes
import json
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from launcher import backends, errors

ROOT = Path(__file__).parent.parent
UNIT = ROOT / "systemd" / "cosmian-kms.service"
ENV_EXAMPLE = ROOT / "systemd" / "kms-launch.env.example"
BACKOFF_DROPIN = ROOT / "systemd" / "cosmian-kms.service.d" / "restart-backoff.conf"
STANDIN = Path(__file__).parent / "standin.py"
LAUNCHER = "/usr/local/bin/kms-launch"
KMS = "/usr/sbin/cosmian_kms"
MAX_EXPOSURE = 2.5

# Directives newer than some systemd still in service (Debian 12 and RHEL 9 ship 252): those
# versions ignore them with an "Unknown key" warning, so they live in the back-off drop-in only.
INTRODUCED_IN = {"RestartSteps": 254, "RestartMaxDelaySec": 254}
OLDEST_SYSTEMD = 252

# sysexits codes a later attempt can fix: the restart loop is for these. Backend unavailable,
# the system short of file descriptors or memory (EX_OSERR), a report that could not be written
# (EX_IOERR: --check only, never in the unit), temporary failure (75 = EX_TEMPFAIL). Every other
# sysexits code kms-launch exits with is permanent.
TRANSIENT_EXIT_CODES = {errors.EX_UNAVAILABLE, errors.EX_OSERR, errors.EX_IOERR, 75}

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
STRACE = shutil.which("strace")
PR_SET_MDWE, PR_GET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 66, 1  # Linux 6.3+
needs_systemd_analyze = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed"
)


def unit_entries(path: Path = UNIT) -> list[tuple[int, str, str, str]]:
    """(line number, section, key, value) for every assignment, in order, as systemd reads them:
    '#' and ';' comment lines, backslash continuations."""
    entries: list[tuple[int, str, str, str]] = []
    section = ""
    lines = path.read_text().splitlines()
    index = 0
    while index < len(lines):
        number, line = index + 1, lines[index].strip()
        index += 1
        while line.endswith("\\") and index < len(lines):
            line = line[:-1] + " " + lines[index].strip()
            index += 1
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, _, value = line.partition("=")
        entries.append((number, section, key.strip(), value.strip()))
    return entries


def service_values(key: str, path: Path = UNIT) -> list[str]:
    return [value for _, section, k, value in unit_entries(path) if section == "Service" and k == key]


def systemd_version() -> int:
    assert SYSTEMD_ANALYZE is not None
    first_line = subprocess.run(
        [SYSTEMD_ANALYZE, "--version"], capture_output=True, text=True, check=True
    ).stdout.splitlines()[0]
    match = re.match(r"systemd (\d+)", first_line)
    assert match, first_line
    return int(match.group(1))


@pytest.fixture
def installed_unit(tmp_path: Path) -> Callable[[str], Path]:
    """The unit copied to a directory of its own, its ExecStart= programs replaced by stand-in
    executables (systemd-analyze checks that they exist), plus `extra` lines if asked."""

    def install(extra: str = "") -> Path:
        text = UNIT.read_text()
        for program in (LAUNCHER, KMS):
            stand_in = tmp_path / Path(program).name
            stand_in.write_text("#!/bin/sh\nexit 0\n")
            stand_in.chmod(0o755)
            assert text.count(program) == 1, f"{program} should appear once, in ExecStart="
            text = text.replace(program, str(stand_in))
        unit = tmp_path / "units" / UNIT.name
        unit.parent.mkdir(exist_ok=True)
        unit.write_text(text + extra)
        return unit

    return install


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    assert SYSTEMD_ANALYZE is not None
    return subprocess.run([SYSTEMD_ANALYZE, *args], capture_output=True, text=True, timeout=60)


def expected_unknown_key_warnings(unit: Path, version: int) -> list[str]:
    """What this systemd version must say about directives newer than itself, and nothing else."""
    return [
        f"{unit}:{number}: Unknown key '{key}' in section [{section}], ignoring."
        for number, section, key, _ in unit_entries(unit)
        if INTRODUCED_IN.get(key, 0) > version
    ]


def test_unit_uses_no_directive_newer_than_the_oldest_systemd_it_supports() -> None:
    too_new = [key for _, _, key, _ in unit_entries() if INTRODUCED_IN.get(key, 0) > OLDEST_SYSTEMD]
    assert too_new == []


@needs_systemd_analyze
def test_unit_verifies_without_warnings(installed_unit: Callable[[str], Path]) -> None:
    unit = installed_unit("")

    result = analyze("verify", str(unit))

    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == []


@needs_systemd_analyze
def test_backoff_dropin_warns_exactly_where_systemd_is_older_than_254(
    installed_unit: Callable[[str], Path],
) -> None:
    unit = installed_unit("")
    dropin = unit.parent / f"{UNIT.name}.d" / BACKOFF_DROPIN.name
    dropin.parent.mkdir()
    dropin.write_text(BACKOFF_DROPIN.read_text())

    result = analyze("verify", str(unit))

    # An empty list on 254 and later; on 252 one warning per setting, which is why it is a
    # drop-in the README installs only there.
    assert result.stderr.splitlines() == expected_unknown_key_warnings(dropin, systemd_version())


@needs_systemd_analyze
def test_verify_reports_an_unknown_key_so_a_clean_result_means_something(
    installed_unit: Callable[[str], Path],
) -> None:
    unit = installed_unit("NoSuchDirective=yes\n")

    result = analyze("verify", str(unit))

    assert "Unknown key 'NoSuchDirective' in section [Install]" in result.stderr


@needs_systemd_analyze
def test_security_exposure_is_at_most_2_5(installed_unit: Callable[[str], Path]) -> None:
    if systemd_version() < 250:
        pytest.skip("systemd-analyze security --offline needs systemd 250 or later")
    unit = installed_unit("")

    # --threshold is in tenths: systemd itself fails the run above 2.5.
    result = analyze(
        "security", "--offline=yes", f"--threshold={int(MAX_EXPOSURE * 10)}", str(unit)
    )

    match = re.search(
        rf"Overall exposure level for {re.escape(unit.name)}: (\d+\.\d+)", result.stdout
    )
    assert match, result.stdout + result.stderr
    score = float(match.group(1))
    print(f"systemd-analyze security --offline=yes: {UNIT.name} exposure {score}")
    assert score <= MAX_EXPOSURE
    assert result.returncode == 0, result.stdout


def syscall_groups() -> dict[str, list[str]]:
    """systemd's named system call sets (@system-service, ...) as this version defines them."""
    groups: dict[str, list[str]] = {}
    current: list[str] = []
    for line in analyze("syscall-filter").stdout.splitlines():
        if line.startswith("@"):
            current = groups.setdefault(line.strip(), [])
        elif line.strip() and not line.strip().startswith("#"):
            current.append(line.strip())
    return groups


def allowed_syscalls() -> set[str]:
    """What the unit's SystemCallFilter= lines allow: the first is an allow list, '~' lines
    remove from it."""
    groups = syscall_groups()

    def expand(name: str) -> set[str]:
        if not name.startswith("@"):
            return {name}
        return set().union(*(expand(member) for member in groups[name]))

    allowed: set[str] = set()
    for value in service_values("SystemCallFilter"):
        deny = value.startswith("~")
        names = set().union(*(expand(name) for name in value.lstrip("~").split()))
        allowed = allowed - names if deny else allowed | names
    return allowed


@needs_systemd_analyze
@pytest.mark.skipif(STRACE is None, reason="strace is not installed")
def test_kms_launch_makes_only_system_calls_the_unit_allows(
    tmp_path: Path, clean_env: dict[str, str]
) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "db-password").write_text("pw")
    config = tmp_path / "kms.toml"
    config.write_text('[db]\ndatabase_url = "postgresql://kms:secret://db-password@db/kms"\n')
    trace = tmp_path / "strace.log"
    env = {**clean_env, "KMS_SECRET_BACKEND": "file", "KMS_SECRETS_DIR": str(secrets)}
    kms_launch = str(Path(sys.executable).with_name("kms-launch"))
    assert STRACE is not None

    subprocess.run(
        [STRACE, "-f", "-qq", "-o", str(trace), kms_launch, "-c", str(config), "--", "/bin/true"],
        env=env,
        check=True,
        timeout=60,
    )

    calls = [m.group(1) for m in re.finditer(r"^\d+\s+([a-z0-9_]+)\(", trace.read_text(), re.M)]
    # Everything kms-launch does, up to and including its execve of the server.
    launcher_calls = set(calls[: [i for i, c in enumerate(calls) if c == "execve"][1] + 1])
    assert {"memfd_create", "fcntl", "prctl", "execve"} <= launcher_calls
    assert launcher_calls - allowed_syscalls() == set()


def _forbid_write_execute_memory() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_MDWE)")


def test_kms_launch_runs_under_memory_deny_write_execute(
    tmp_path: Path, clean_env: dict[str, str]
) -> None:
    # The kernel's own W^X lock (PR_SET_MDWE, Linux 6.3+, inherited across fork and exec) stands
    # in for systemd's seccomp-based MemoryDenyWriteExecute=: both refuse writable+executable
    # mappings and making memory executable later.
    try:
        subprocess.run([sys.executable, "-c", "pass"], preexec_fn=_forbid_write_execute_memory)
    except subprocess.SubprocessError:  # what preexec_fn's OSError becomes in the parent
        pytest.skip("this kernel has no PR_SET_MDWE (Linux 6.3+)")
    config = tmp_path / "kms.toml"
    config.write_text("[http]\nport = 9998\n")
    report = tmp_path / "mdwe.json"
    server = (
        "import ctypes, json, mmap, sys\n"
        "mdwe = ctypes.CDLL(None).prctl(66, 0, 0, 0, 0)\n"
        "try:\n"
        "    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)\n"
        "    wx = 'allowed'\n"
        "except PermissionError:\n"
        "    wx = 'refused'\n"
        "json.dump({'mdwe': mdwe, 'wx': wx}, open(sys.argv[1], 'w'))\n"
    )
    kms_launch = str(Path(sys.executable).with_name("kms-launch"))

    process = subprocess.run(
        [kms_launch, "-c", str(config), "--", sys.executable, "-c", server, str(report)],
        env=clean_env,
        preexec_fn=_forbid_write_execute_memory,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert process.returncode == 0, process.stderr
    # The server it exec'd inherited the lock, so kms-launch itself ran under it.
    assert json.loads(report.read_text()) == {"mdwe": PR_MDWE_REFUSE_EXEC_GAIN, "wx": "refused"}


def test_kms_launch_starts_the_kms_once_per_start() -> None:
    assert service_values("Type") == ["exec"]
    assert service_values("ExecStart") == [f"{LAUNCHER} -c /etc/cosmian/kms.toml -- {KMS}"]
    assert service_values("ExecStartPre") == []  # no --check pass: one vault round per start


def test_execstart_resolves_credentials_the_unit_loads_and_execs_the_kms(
    tmp_path: Path, clean_env: dict[str, str]
) -> None:
    # As systemd would run it: LoadCredentialEncrypted= files in $CREDENTIALS_DIRECTORY, which
    # the file backend reads when KMS_SECRETS_DIR is unset. Programs and config path swapped for
    # this checkout's kms-launch, the stand-in server and a temporary config.
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "db-password").write_text("from-systemd-credentials")
    config = tmp_path / "kms.toml"
    config.write_text('[db]\ndatabase_url = "postgresql://kms:secret://db-password@db/kms"\n')
    kms = tmp_path / "cosmian_kms"
    kms.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{STANDIN}" "$@"\n')
    kms.chmod(0o755)
    swap = {
        LAUNCHER: str(Path(sys.executable).with_name("kms-launch")),
        KMS: str(kms),
        "/etc/cosmian/kms.toml": str(config),
    }
    (execstart,) = service_values("ExecStart")
    argv = [swap.get(arg, arg) for arg in shlex.split(execstart)]
    report = tmp_path / "report.json"
    env = {
        **clean_env,
        "KMS_SECRET_BACKEND": "file",
        "CREDENTIALS_DIRECTORY": str(credentials),
        "STANDIN_REPORT": str(report),
    }

    process = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, text=True)
    _, stderr = process.communicate(timeout=60)

    assert process.returncode == 0, stderr
    received = json.loads(report.read_text())
    assert received["pid"] == process.pid
    assert received["argv"][1:3] == ["-c", received["config"]["path"]]
    assert received["parsed"]["db"]["database_url"] == (
        "postgresql://kms:from-systemd-credentials@db/kms"
    )


def test_restart_prevent_exit_status_lists_exactly_the_permanent_exit_codes() -> None:
    launcher_codes = {
        cls.exit_code for cls in _subclasses(errors.LaunchError) if 64 <= cls.exit_code <= 78
    }
    permanent = launcher_codes - TRANSIENT_EXIT_CODES

    listed = [
        int(code) for value in service_values("RestartPreventExitStatus") for code in value.split()
    ]

    assert sorted(listed) == sorted(permanent) == [65, 66, 77, 78]


def test_unavailable_backend_is_restarted_with_backoff() -> None:
    assert service_values("Restart") == ["on-failure"]
    assert service_values("RestartSec") == ["2s"]
    prevented = " ".join(service_values("RestartPreventExitStatus")).split()
    assert str(errors.EX_UNAVAILABLE) not in prevented
    assert service_values("RestartSteps", BACKOFF_DROPIN) == ["8"]
    assert service_values("RestartMaxDelaySec", BACKOFF_DROPIN) == ["5min"]


def test_journal_lines_are_tagged_with_the_servers_name_not_the_launchers() -> None:
    (execstart,) = service_values("ExecStart")
    assert service_values("SyslogIdentifier") == [Path(shlex.split(execstart)[-1]).name]
    assert service_values("SyslogIdentifier") == ["cosmian_kms"]


def test_backend_credentials_come_from_encrypted_credentials_not_the_environment() -> None:
    assert service_values("LoadCredentialEncrypted") == ["vault-token"]
    assert service_values("Environment") == []
    assert service_values("EnvironmentFile") == ["-/etc/cosmian/kms-launch.env"]


def test_example_environment_file_holds_no_credential_variable() -> None:
    assignments = [
        line.split("=", 1)[0].lstrip("#").strip()
        for line in ENV_EXAMPLE.read_text().splitlines()
        if re.match(r"#?[A-Z][A-Z0-9_]*=", line)
    ]
    assert "KMS_SECRET_BACKEND" in assignments
    assert not set(assignments) & backends.secret_env()


def _subclasses(cls: type) -> list[type]:
    found = []
    for sub in cls.__subclasses__():
        found += [sub, *_subclasses(sub)]
    return found
