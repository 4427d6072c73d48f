"""`python -X importtime` evidence: which packages a launch of each backend imports, and what the
imports of the `file` backend cost."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

# Third-party packages worth watching on the launch path: the stack itself, what it could drag in
# (rich, pydantic), and every backend SDK with what it pulls in.
WATCHED = (
    "typer", "click", "tomlkit", "shellingham", "rich", "pydantic", "hvac", "requests",
    "urllib3", "charset_normalizer", "idna", "certifi", "boto3", "botocore", "s3transfer",
    "jmespath", "dateutil", "msal", "jwt", "cryptography",
)  # fmt: skip
SDKS = ("hvac", "requests", "urllib3", "boto3", "botocore", "msal", "jwt", "cryptography")


@dataclass(frozen=True)
class Import:
    name: str
    self_us: int
    cumulative_us: int
    depth: int  # 0 for a module imported at top level


@dataclass(frozen=True)
class Imports:
    modules: tuple[Import, ...]

    @property
    def packages(self) -> list[str]:
        """The watched third-party packages that were imported, in watch-list order."""
        tops = {module.name.split(".")[0] for module in self.modules}
        return [name for name in WATCHED if name in tops]

    @property
    def total_ms(self) -> float:
        return sum(module.self_us for module in self.modules) / 1000

    def slowest(self, count: int) -> list[Import]:
        """The costliest top-level imports (cumulative: with everything they imported)."""
        tops = [module for module in self.modules if module.depth == 0]
        return sorted(tops, key=lambda module: -module.cumulative_us)[:count]

    def share(self, package: str) -> float:
        """Milliseconds of self time spent importing `package` and its submodules."""
        prefix = package + "."
        return (
            sum(m.self_us for m in self.modules if m.name == package or m.name.startswith(prefix))
            / 1000
        )


def measure(argv: Sequence[str], environ: Mapping[str, str], cwd: str) -> Imports:
    """Run `argv` (a Python interpreter and its arguments) with -X importtime; parse stderr."""
    python, *rest = argv
    process = subprocess.run(
        [python, "-X", "importtime", *rest],
        env=dict(environ),
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    )
    return parse(process.stderr)


def parse(stderr: str) -> Imports:
    modules = []
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, cumulative_us, name = line.removeprefix("import time:").split("|")
        indent = len(name) - len(name.lstrip(" "))
        modules.append(Import(name.strip(), int(self_us), int(cumulative_us), (indent - 1) // 2))
    return Imports(tuple(modules))
