"""Scale: 10,000 references (2,000 distinct) resolve on the `file` backend, and time and peak
memory grow no worse than linearly from 1,000 to 10,000."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SPAWNER = Path(__file__).with_name("spawner.py")


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


def launch(config: Path, env: dict[str, str], tmp_path: Path) -> tuple[int, float, int]:
    """(exit code, wall seconds, peak RSS in KiB of the launcher, kept across exec by the kernel).
    Spawned from tests/spawner.py, not from pytest: a child's ru_maxrss starts at its parent's
    RSS (it runs on the parent's address space until exec), and pytest's is larger than ours."""
    job = {
        "argv": [sys.executable, "-m", "launcher", "--backend", "file", "-c", str(config), "--", "/bin/true"],
        "env": {**env, "KMS_SECRETS_DIR": str(config.parent / "secrets")},
        "cwd": str(tmp_path), "stderr": str(tmp_path / "launch.stderr"), "timeout": 60,
    }
    spawner = subprocess.run(
        [sys.executable, "-I", "-S", str(SPAWNER)], input=json.dumps(job) + "\n",
        capture_output=True, text=True, timeout=90, check=True,
    )
    answer = json.loads(spawner.stdout)
    return answer["exit"], answer["seconds"], answer["maxrss_kib"]


def test_ten_thousand_references_resolve_and_cost_grows_linearly(tmp_path: Path, clean_env: dict[str, str]) -> None:
    small_dir, large_dir = tmp_path / "small", tmp_path / "large"
    small_dir.mkdir()
    large_dir.mkdir()
    small = write_references(small_dir, 1_000, 200)
    large = write_references(large_dir, 10_000, 2_000)
    small_runs = [launch(small, clean_env, tmp_path) for _ in range(2)]
    large_runs = [launch(large, clean_env, tmp_path) for _ in range(2)]
    assert {code for code, _, _ in small_runs + large_runs} == {0}
    small_time, small_rss = min(t for _, t, _ in small_runs), min(r for _, _, r in small_runs)
    large_time, large_rss = min(t for _, t, _ in large_runs), min(r for _, _, r in large_runs)
    print(f"\n1,000 refs: {small_time:.2f}s {small_rss / 1024:.0f} MiB; 10,000 refs: {large_time:.2f}s {large_rss / 1024:.0f} MiB")
    # Linear growth would give at most 10x for 10x the references (start-up cost makes it less);
    # a quadratic step would give about 100x. 12x leaves room for a noisy machine.
    assert large_time / small_time < 12
    assert large_rss / small_rss < 12


def test_ten_thousand_references_all_come_out_right(tmp_path: Path, run_launcher) -> None:
    config = write_references(tmp_path, 10_000, 2_000)
    result = run_launcher("--backend", "file", "-c", str(config), env={"KMS_SECRETS_DIR": str(tmp_path / "secrets")})
    assert result.returncode == 0, result.stderr
    app = result.report["parsed"]["app"]
    assert len(app) == 10_000
    assert all(app[f"k{i}"] == f"pre-value-{i % 2000}-{'x' * 40}@post" for i in range(10_000))
