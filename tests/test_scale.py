"""Scale: 10,000 references (2,000 distinct) resolve on the `file` backend, and CPU time and peak
memory grow no worse than linearly from 1,000 to 10,000. One 10,000-reference launch serves
both the correctness check and the growth check."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import STANDIN, machine_env

SPAWNER = Path(__file__).with_name("spawner.py")
SMALL, LARGE = (1_000, 200), (10_000, 2_000)  # (references, distinct secrets)

pytestmark = pytest.mark.slow


def write_references(directory: Path, total: int, distinct: int) -> Path:
    secrets = directory / "secrets"
    secrets.mkdir()
    for index in range(distinct):
        (secrets / f"s{index}").write_text(f"value-{index}-" + "x" * 40)
    lines = ["[app]"]
    lines += [f'k{index} = "pre-secret://s{index % distinct}@post"' for index in range(total)]
    config = directory / "kms.toml"
    config.write_text("\n".join(lines) + "\n")
    return config


def launch(config: Path, env: dict[str, str], report: Path) -> dict[str, Any]:
    """{exit, seconds, cpu_seconds, maxrss_kib} of one launch that execs the stand-in, which
    writes `report`. maxrss is the launcher's peak, kept across exec by the kernel (the stand-in
    that follows is smaller). Spawned from tests/spawner.py, not from pytest: a child's
    ru_maxrss starts at its parent's RSS (it runs on the parent's address space until exec),
    and pytest's is larger than ours."""
    job = {
        "argv": [sys.executable, "-m", "launcher", "--backend", "file", "-c", str(config),
                 "--", sys.executable, str(STANDIN)],
        "env": {**env, "KMS_SECRETS_DIR": str(config.parent / "secrets"), "STANDIN_REPORT": str(report)},
        "cwd": str(config.parent), "stderr": str(config.parent / "launch.stderr"), "timeout": 120,
    }
    spawner = subprocess.run(
        [sys.executable, "-I", "-S", str(SPAWNER)], input=json.dumps(job) + "\n",
        capture_output=True, text=True, timeout=150, check=True,
    )
    answer: dict[str, Any] = json.loads(spawner.stdout)
    return answer


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two launches of 1,000 references and one of 10,000, with the 10,000 one's report."""
    directory = tmp_path_factory.mktemp("scale")
    env = machine_env(directory)
    found: dict[str, Any] = {}
    for name, (total, distinct) in (("small", SMALL), ("large", LARGE)):
        (directory / name).mkdir()
        config = write_references(directory / name, total, distinct)
        report = directory / name / "report.json"
        found[name] = [launch(config, env, report) for _ in range(2 if name == "small" else 1)]
        found[f"{name}_report"] = json.loads(report.read_text())
    return found


def test_ten_thousand_references_all_come_out_right(runs: dict[str, Any]) -> None:
    [large] = runs["large"]
    assert large["exit"] == 0
    config = base64.b64decode(runs["large_report"]["config"]["bytes_b64"]).decode()
    app = runs["large_report"]["parsed"]["app"]
    assert len(app) == 10_000
    assert all(app[f"k{i}"] == f"pre-value-{i % 2000}-{'x' * 40}@post" for i in range(10_000))
    assert "secret://" not in config


def test_cost_grows_no_worse_than_linearly(runs: dict[str, Any]) -> None:
    assert {run["exit"] for run in runs["small"] + runs["large"]} == {0}
    # CPU time, not wall time: what the launcher did, whatever else the machine was doing.
    small_cpu = min(run["cpu_seconds"] for run in runs["small"])
    small_rss = min(run["maxrss_kib"] for run in runs["small"])
    [large] = runs["large"]
    print(
        f"\n1,000 refs: {small_cpu:.2f}s CPU {small_rss / 1024:.0f} MiB;"
        f" 10,000 refs: {large['cpu_seconds']:.2f}s CPU {large['maxrss_kib'] / 1024:.0f} MiB"
    )
    # Linear growth would give at most 10x for 10x the references (start-up cost makes it less);
    # a quadratic step would give about 100x.
    assert large["cpu_seconds"] / small_cpu < 12
    assert large["maxrss_kib"] / small_rss < 12
