"""The benchmark's command line: set up the venvs, start the servers, run the scenarios, report."""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

from bench import contenders, envs, importtime, plot, readme, report
from bench.common import OUT, ROOT, clean_environ
from bench.results import Results
from bench.scenarios import SCALING, Bench, Plan, file_workload, say
from bench.servers import BACKENDS, Stack
from bench.timing import Spawner
from bench.workload import Stores

RESULTS = OUT / "results.json"
PLOT = ROOT / "bench" / "launch-time.png"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench/run.py", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer sizes and runs (~2 minutes)")
    parser.add_argument(
        "--report-only", action="store_true", help="redraw table and plot from the last results"
    )
    parser.add_argument(
        "--no-readme", action="store_true", help="do not touch README.md and bench/launch-time.png"
    )
    parser.add_argument(
        "--only",
        metavar="WORKLOAD",
        choices=SCALING,
        action="append",
        help="only this workload's scaling at 50 ms, N=1 and N=100, with this tree's kms-launch"
        " (no venvs); repeat it to alternate several; prints their table, touches nothing",
    )
    options = parser.parse_args(argv)
    if options.only:
        results = measure_only(Plan(quick=False, only=True), options.only)
        print("\n".join(report.scaling_table(results, 50)))
        print("\n".join(["", *report.targets_table(results)]))
        return 0
    if options.report_only:
        results = Results.load(RESULTS)
    else:
        results = measure(Plan(quick=options.quick))
        results.save(RESULTS)
    table = report.render(results)
    print(table)
    if results.mode == "full" and not options.no_readme:
        plot.draw(results, PLOT)
        readme.update(ROOT / "README.md", _readme_block(table, results))
        say(f"wrote {PLOT.relative_to(ROOT)} and the Performance section of README.md")
    else:
        plot.draw(results, OUT / "launch-time.png")
        say(f"wrote {(OUT / 'launch-time.png').relative_to(ROOT)} (README.md untouched)")
    return 0


def measure(plan: Plan) -> Results:
    started = time.monotonic()
    say("setting up bench/.venvs (reused while their inputs are unchanged)")
    setup = envs.setup()
    results = Results("quick" if plan.quick else "full")
    results.notes.update(
        machine=f"{os.cpu_count()} cores, {platform.platform()}, Python {platform.python_version()}",
        missing=setup.missing,
    )
    scratch = OUT / "work"
    with Stack(OUT / "servers") as stack, Spawner(OUT) as spawner:
        say("servers up; storing the secrets")
        largest = max(plan.sizes)
        stores = Stores(stack, largest, scratch)
        bench = Bench(
            stack,
            stores,
            spawner,
            contenders.build(setup),
            clean_environ(OUT / "home"),
            setup.launch.python,
            results,
            plan,
        )
        results.notes["imports"] = _imports(bench, setup.launch)
        bench.overhead(scratch)
        bench.scaling()
        bench.contenders_run()
    results.notes["seconds"] = round(time.monotonic() - started)
    say(f"done in {results.notes['seconds']} s")
    return results


def measure_only(plan: Plan, only: list[str]) -> Results:
    """Some workloads' scaling at 50 ms, alternating run by run (see --only)."""
    started = time.monotonic()
    results = Results("only")
    scratch = OUT / "work"
    with Stack(OUT / "servers") as stack, Spawner(OUT) as spawner:
        stores = Stores(stack, max(plan.sizes), scratch)
        bench = Bench(
            stack,
            stores,
            spawner,
            contenders.this_tree(),
            clean_environ(OUT / "home"),
            sys.executable,
            results,
            plan,
        )
        bench.scaling(only, [0.05])
    results.notes["seconds"] = round(time.monotonic() - started)
    return results


def _imports(bench: Bench, launch: envs.Venv) -> dict[str, dict[str, object]]:
    """-X importtime of one launch per backend, at 0 ms latency."""
    bench.stack.set_latency(0)
    found: dict[str, dict[str, object]] = {}
    workloads = [file_workload(OUT / "work")]
    workloads += [bench.stores.workload(label, 1) for label in ("vault/paths", *BACKENDS[1:])]
    for workload in workloads:
        kms_launch = bench.contenders["kms-launch"]
        argv = [launch.python, *kms_launch.argv(workload, ["/bin/true"])]
        imports = importtime.measure(
            argv, bench.environ(kms_launch, workload), str(workload.directory)
        )
        found[workload.backend] = {
            "packages": imports.packages,
            "total_ms": imports.total_ms,
            "slowest": [(m.name, m.cumulative_us) for m in imports.slowest(8)],
        }
    return found


def _readme_block(table: str, results: Results) -> str:
    missing = results.notes.get("missing") or {}
    lines = [
        f"Last full run: {results.notes.get('machine')}; {results.notes.get('seconds')} s in all.",
        "",
        table,
        "",
        "![Launch time against the number of references](bench/launch-time.png)",
    ]
    if missing:
        lines += ["", *(f"- {name}: not run ({why})" for name, why in missing.items())]
    return "\n".join(lines)
