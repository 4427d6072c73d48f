"""container/Containerfile built and run by podman, with the README's own commands.

The image is built unchanged from a local base (the KMS_IMAGE build argument: the Debian 12
rootfs with the stand-in server as /usr/bin/cosmian_kms, pip pointed at a wheelhouse because pip
in a build may not trust the registry's TLS). The README's `podman run` runs as written except for
the vault's address, which is the test's OpenBao on the host's loopback. This machine's podman
quirks (runc, explicit ulimits, host network) and a storage of the tests' own come from
tests/system/harness.py's containers.conf, not from extra flags.
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.system import harness
from tests.system.conftest import Blackhole

# The first test of a cold run builds the rootfs, the base image and the image (minutes).
pytestmark = pytest.mark.timeout(900)

STANDIN = Path(__file__).parent / "standin_server.py"
EXAMPLE_VAULT = "https://vault.example.internal:8200"
DB_PASSWORD = "db-password-in-a-container-Zk2"
EXIT_ON_SIGTERM = 42  # the stand-in's own status, distinct from anything kms-launch exits with
SEALS = 0x1 | 0x2 | 0x4 | 0x8  # F_SEAL_SEAL | SHRINK | GROW | WRITE


def readme() -> dict[str, list[str]]:
    """The README's container commands by their first two words, as argv lists."""
    commands = [shlex.split(c, comments=True) for c in harness.readme_commands("### Containers")]
    return {" ".join(argv[:2]): argv for argv in commands}


@pytest.fixture(scope="session")
def image(request: pytest.FixtureRequest) -> Iterator[str]:
    reason = harness.missing_privileges(harness.ROOTFS_TOOLS + harness.PODMAN_TOOLS)
    if reason:
        pytest.skip(reason)  # before building anything
    with harness.locked("podman-run"):  # the README's container and secret names are fixed
        yield from _build(request)


def _build(request: pytest.FixtureRequest) -> Iterator[str]:
    debian_rootfs: Path = request.getfixturevalue("debian_rootfs")
    wheels: tuple[Path, Path] = request.getfixturevalue("wheels")
    started = time.monotonic()
    base = harness.base_image(debian_rootfs, wheels[0], STANDIN)
    print(f"\nbase image ready in {time.monotonic() - started:.1f}s")
    build = readme()["podman build"]
    tag = build[build.index("-t") + 1]
    started = time.monotonic()
    # The README's build, plus the build argument that names the base image.
    harness.podman(*build[1:], "--build-arg", f"KMS_IMAGE={base}", cwd=harness.ROOT, timeout=900)
    print(f"\nimage built in {time.monotonic() - started:.1f}s")
    harness.podman("image", "prune", "--force")  # earlier builds of the tag: keep the cache bounded
    yield tag


@dataclass
class Container:
    name: str
    workdir: Path

    def inspect(self, template: str) -> str:
        return harness.podman("inspect", "--format", template, self.name).stdout.strip()

    def file(self, name: str, timeout: float = 30) -> dict[str, Any]:
        """A stand-in report from the container's /var/lib/cosmian-kms volume."""
        deadline = time.monotonic() + timeout
        while True:
            volume = self.inspect('{{range .Mounts}}{{if eq .Destination "/var/lib/cosmian-kms"}}'
                                  '{{.Source}}{{end}}{{end}}')
            path = Path(volume) / name
            if volume and path.exists():
                return json.loads(path.read_text())
            logs = harness.podman("logs", self.name, check=False)
            assert time.monotonic() < deadline, f"no {name}: {logs.stdout}{logs.stderr}"
            time.sleep(0.05)

    def stop(self) -> float:
        started = time.monotonic()
        harness.podman("stop", self.name, timeout=60)
        return time.monotonic() - started


@pytest.fixture
def run_readme_container(image: str, openbao: Any, tmp_path: Path) -> Iterator[Any]:
    """Run the README's `podman secret create` and `podman run` in a directory holding ./token and
    ./kms.toml, with the vault address swapped for `vault_url`."""
    openbao.put("container", **{"db-password": DB_PASSWORD})
    commands = readme()
    name = commands["podman run"][commands["podman run"].index("--name") + 1]
    secret = commands["podman secret"][3]

    def cleanup() -> None:
        harness.podman("rm", "--force", "--volumes", name, check=False)
        harness.podman("secret", "rm", secret, check=False)

    def run(vault_url: str) -> Container:
        cleanup()
        (tmp_path / "token").write_text(openbao.token)
        (tmp_path / "kms.toml").write_text(
            '[db]\ndatabase_url = "postgresql://kms:secret://secret/container#db-password@db/kms"\n'
            f"[standin]\nexit_on_sigterm = {EXIT_ON_SIGTERM}\n"
        )
        harness.podman(*commands["podman secret"][1:], cwd=tmp_path)
        argv = [f"VAULT_ADDR={vault_url}" if arg == f"VAULT_ADDR={EXAMPLE_VAULT}" else arg
                for arg in commands["podman run"]]
        assert argv != commands["podman run"]
        harness.podman(*argv[1:], cwd=tmp_path)
        return Container(name, tmp_path)

    yield run
    cleanup()


def test_readme_runs_read_only_without_capabilities_or_new_privileges() -> None:
    run = readme()["podman run"]
    assert {"--read-only", "--cap-drop=all"} <= set(run)
    assert run[run.index("--security-opt") + 1] == "no-new-privileges"


def test_image_entrypoint_is_kms_launch_in_front_of_cosmian_kms(image: str) -> None:
    entrypoint = json.loads(harness.podman("image", "inspect", "--format", "{{json .Config.Entrypoint}}", image).stdout)
    user = harness.podman("image", "inspect", "--format", "{{.Config.User}}", image).stdout.strip()

    assert entrypoint == ["kms-launch", "-c", "/etc/cosmian/kms.toml", "--", "cosmian_kms"]
    assert user == "10001:10001"


def test_server_is_pid_1_with_its_config_in_a_sealed_memfd(run_readme_container: Any, openbao: Any) -> None:
    container = run_readme_container(openbao.url)

    report = container.file("standin-report.json")

    assert report["pid"] == 1
    assert report["argv"] == ["/usr/bin/cosmian_kms", "-c", report["config"]["path"]]
    assert report["config"]["link"].startswith("/memfd:kms.toml")
    assert report["config"]["seals"] & SEALS == SEALS
    assert f"postgresql://kms:{DB_PASSWORD}@db/kms" in report["config"]["text"]


def test_vault_token_from_a_mounted_secret_never_becomes_an_environment_variable(
    run_readme_container: Any, openbao: Any
) -> None:
    container = run_readme_container(openbao.url)

    report = container.file("standin-report.json")

    assert DB_PASSWORD in report["config"]["text"]  # the token reached OpenBao
    assert "VAULT_TOKEN" not in report["environ"]
    assert "KMS_SECRET_BACKEND" not in report["environ"]
    logs = harness.podman("logs", container.name)
    assert openbao.token not in logs.stdout + logs.stderr
    assert DB_PASSWORD not in logs.stdout + logs.stderr


def test_server_runs_unprivileged_on_a_read_only_root(run_readme_container: Any, openbao: Any) -> None:
    container = run_readme_container(openbao.url)

    report = container.file("standin-report.json")

    assert report["status"] == {"CapEff": "0000000000000000", "NoNewPrivs": "1", "uid": 10001}
    assert container.inspect("{{.HostConfig.ReadonlyRootfs}}") == "true"


def test_podman_stop_delivers_sigterm_to_the_server_and_its_status_comes_through(
    run_readme_container: Any, openbao: Any
) -> None:
    container = run_readme_container(openbao.url)
    container.file("standin-report.json")

    took = container.stop()

    assert container.file("standin-stopped.json") == {"signal": 15, "pid": 1}
    assert int(container.inspect("{{.State.ExitCode}}")) == EXIT_ON_SIGTERM
    assert took < 5  # podman waits 10 s before SIGKILL: the server went on SIGTERM


def test_podman_stop_during_resolution_ends_at_once(run_readme_container: Any, blackhole: Blackhole) -> None:
    container = run_readme_container(blackhole.url)
    blackhole.wait_for_a_client()  # kms-launch, PID 1, is waiting on the vault

    took = container.stop()

    assert int(container.inspect("{{.State.ExitCode}}")) == 143  # 128 + SIGTERM, from its handler
    assert took < 3
