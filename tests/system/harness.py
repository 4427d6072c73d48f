"""Builds what the system tests run on, once, cached outside the clone: a Debian 12 root file
system (debootstrap), a wheelhouse of kms-launch's dependencies, the checkout's own wheel.

The cache directory is $KMS_LAUNCH_TEST_CACHE, default /var/cache/kms-launch-tests. Each entry is
named after a hash of everything that goes into it, so a change of recipe builds a new one and an
unchanged one is reused as is. Entries are built under a temporary name and renamed when
complete: an interrupted build is never taken for a finished one.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("KMS_LAUNCH_TEST_CACHE", "/var/cache/kms-launch-tests"))

# Debian 12 ships systemd 252 and Python 3.11: the oldest systemd the unit supports, and the
# Python of the image's bookworm base. ca-certificates because the Containerfile installs it.
SUITE = "bookworm"
INCLUDE = ("systemd", "systemd-sysv", "dbus", "python3", "python3-venv", "ca-certificates")
RECIPE_VERSION = 1  # bump when the steps below change in a way the hash cannot see

ROOTFS_TOOLS = ("debootstrap", "systemd-nspawn", "nsenter")


def missing_privileges(tools: tuple[str, ...]) -> str | None:
    """Why these tests cannot run here, in one line, or None if they can."""
    if os.geteuid() != 0:
        return "system tests need root (debootstrap, systemd-nspawn, podman)"
    absent = [tool for tool in tools if shutil.which(tool) is None]
    if absent:
        return f"system tests need {', '.join(absent)} (apt-get install -y debootstrap systemd-container podman runc)"
    return None


def digest(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_digest(*paths: Path) -> str:
    hasher = hashlib.sha256()
    for path in paths:
        hasher.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return hasher.hexdigest()[:16]


def mirror() -> str:
    """The Debian mirror apt uses on this host, so debootstrap goes where apt already goes."""
    if os.environ.get("KMS_LAUNCH_TEST_MIRROR"):
        return os.environ["KMS_LAUNCH_TEST_MIRROR"]
    sources = [*Path("/etc/apt/sources.list.d").glob("*.sources"), Path("/etc/apt/sources.list")]
    for source in sources:
        if source.is_file():
            for match in re.finditer(r"(?:URIs:|deb)\s+(https?://\S+/debian)\b(?!-)", source.read_text()):
                return match.group(1)
    return "http://deb.debian.org/debian"


@contextlib.contextmanager
def locked(name: str) -> Iterator[None]:
    """One builder at a time per cache entry (two pytest runs may start together)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def cached(name: str, build: callable) -> Path:  # type: ignore[valid-type]
    """CACHE/name, made by build(tmp_dir) under a temporary name the first time."""
    final = CACHE / name
    with locked(name):
        if final.exists():
            return final
        partial = CACHE / f"{name}.partial"
        if partial.exists():
            shutil.rmtree(partial)
        partial.mkdir(parents=True)
        build(partial)
        partial.rename(final)
    return final


def rootfs(suite: str = SUITE, include: tuple[str, ...] = INCLUDE) -> Path:
    """A Debian minbase (12 by default) with systemd and Python, apt pointed at nothing (builds
    on it run offline)."""
    source = mirror()
    key = digest("rootfs", suite, include, source, RECIPE_VERSION)

    def build(target: Path) -> None:
        done = subprocess.run(
            ["debootstrap", "--variant=minbase", f"--include={','.join(include)}", suite,
             str(target), source],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=1800,
        )
        if done.returncode != 0:
            raise RuntimeError(f"debootstrap from {source} failed:\n{done.stdout[-3000:]}")
        # No package source: an apt-get in an image built on this must not reach the network.
        (target / "etc/apt/sources.list").write_text("")
        shutil.rmtree(target / "var/lib/apt/lists", ignore_errors=True)
        (target / "var/lib/apt/lists/partial").mkdir(parents=True)
        shutil.rmtree(target / "var/cache/apt/archives", ignore_errors=True)
        (target / "var/cache/apt/archives/partial").mkdir(parents=True)

    return cached(f"rootfs-{suite}-{key}", build)


def wheelhouse() -> Path:
    """Wheels of every dependency of kms-launch[all] plus the build backend, downloaded with this
    host's pip (which trusts the registry), for installing offline in the rootfs and the image."""
    optional = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    wanted = [*_requirements_for("all", optional)]
    key = digest("wheelhouse", wanted, sys.version_info[:2], RECIPE_VERSION)

    def build(target: Path) -> None:
        done = subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "-d",
             str(target), *wanted],
            capture_output=True, text=True, timeout=1800,
        )
        if done.returncode != 0:
            raise RuntimeError(f"pip download failed:\n{done.stderr[-3000:]}")

    return cached(f"wheelhouse-{key}", build)


def _requirements_for(extra: str, optional: dict[str, list[str]]) -> Iterator[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    yield from project["build-system"]["requires"]
    yield from project["project"]["dependencies"]
    seen: set[str] = set()
    stack = [extra]
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        for requirement in optional[name]:
            match = re.fullmatch(r"kms-launch\[([\w,-]+)\]", requirement)
            if match:
                stack += match.group(1).split(",")
            else:
                yield requirement


def source_files() -> list[Path]:
    """What the Containerfile copies and pip builds: the checkout as installed."""
    return [ROOT / "pyproject.toml", ROOT / "README.md",
            *sorted(p for p in (ROOT / "launcher").rglob("*.py"))]


def checkout_wheel(wheels: Path) -> Path:
    """The directory holding this checkout's wheel, built offline in a copy of its sources
    (nothing is written to the clone), cached by their content."""
    files = source_files()
    key = digest("checkout", wheels.name, [str(p.relative_to(ROOT)) for p in files],
                 file_digest(*files))

    def build(into: Path) -> None:
        with tempfile.TemporaryDirectory(prefix="kms-launch-src-") as tmp:
            src = Path(tmp) / "kms-launch"
            for path in files:
                target = src / path.relative_to(ROOT)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target)
            subprocess.run(
                [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-index",
                 "--find-links", str(wheels), "-w", str(into), str(src)],
                check=True, timeout=600, capture_output=True,
            )

    return cached(f"checkout-{key}", build)


PODMAN_TOOLS = ("podman", "runc")
PODMAN = CACHE / "podman"
# This machine's podman quirks, as configuration rather than flags, so the README's commands run
# as written: crun refuses the hybrid cgroups here (runc), raising hard limits is refused
# (explicit ulimits), and the test vault listens on the host's loopback (host network).
CONTAINERS_CONF = """\
[containers]
netns = "host"
default_ulimits = ["nofile=1024:4096", "nproc=4096:4096"]
[engine]
runtime = "runc"
"""


def podman_env() -> dict[str, str]:
    """Environment for podman: the settings above, and a storage of its own under the cache, so
    the tests' images, containers and secrets never mix with the user's."""
    PODMAN.mkdir(parents=True, exist_ok=True)
    conf, storage = PODMAN / "containers.conf", PODMAN / "storage.conf"
    conf.write_text(CONTAINERS_CONF)
    storage.write_text(
        f'[storage]\ndriver = "overlay"\ngraphroot = "{PODMAN / "storage"}"\n'
        f'runroot = "/run/kms-launch-tests/podman"\n'
    )
    return {**os.environ, "CONTAINERS_CONF": str(conf), "CONTAINERS_STORAGE_CONF": str(storage)}


def podman(*args: str, check: bool = True, timeout: float = 120,
           cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["podman", *args], env=podman_env(), capture_output=True, text=True,
                            timeout=timeout, cwd=cwd)
    if check and result.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} exited {result.returncode}:\n{result.stderr}")
    return result


def base_image(rootfs_dir: Path, wheels: Path, standin: Path) -> str:
    """A local stand-in for ghcr.io/cosmian/kms: the Debian 12 rootfs (`podman import`), the
    stand-in server as /usr/bin/cosmian_kms where the official image has the KMS, and pip set to
    install offline from the wheelhouse (/etc/pip.conf, which the image's venv pip reads)."""
    key = digest("base", rootfs_dir.name, wheels.name, file_digest(standin), RECIPE_VERSION)
    tag = f"localhost/kms-launch-test-base:{key}"
    if podman("image", "exists", tag, check=False).returncode == 0:
        return tag
    rootfs_tag = f"localhost/kms-launch-test-rootfs:{rootfs_dir.name.rsplit('-', 1)[1]}"
    if podman("image", "exists", rootfs_tag, check=False).returncode != 0:
        tar = subprocess.Popen(["tar", "-C", str(rootfs_dir), "--exclude=./proc/*", "-c", "."],
                               stdout=subprocess.PIPE)
        subprocess.run(["podman", "import", "-", rootfs_tag], stdin=tar.stdout, env=podman_env(),
                       check=True, capture_output=True, timeout=600)
        assert tar.wait() == 0
    with tempfile.TemporaryDirectory(prefix="kms-launch-base-") as tmp:
        context = Path(tmp)
        shutil.copy(standin, context / "cosmian_kms")
        (context / "cosmian_kms").chmod(0o755)
        shutil.copytree(wheels, context / "wheelhouse")
        (context / "pip.conf").write_text("[global]\nno-index = true\nfind-links = /opt/wheelhouse\n")
        (context / "Containerfile").write_text(
            f"FROM {rootfs_tag}\nCOPY cosmian_kms /usr/bin/cosmian_kms\n"
            "COPY wheelhouse /opt/wheelhouse\nCOPY pip.conf /etc/pip.conf\n"
        )
        podman("build", "-q", "-t", tag, str(context), timeout=600)
    return tag


if __name__ == "__main__":  # python -m tests.system.harness: warm the cache by hand
    print(rootfs())
    print(wheelhouse())


def readme_commands(heading: str, block: int = 0) -> list[str]:
    """The shell commands of the README's `block`-th ```sh block under `heading`, as a user would
    paste them: continuation lines joined, comment-only lines dropped."""
    text = (ROOT / "README.md").read_text()
    section = re.split(r"\n##+ ", text.split(f"\n{heading}\n", 1)[1], maxsplit=1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
    commands: list[str] = []
    pending = ""
    for line in blocks[block].splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1]
            continue
        commands.append(pending + line)
        pending = ""
    return commands
