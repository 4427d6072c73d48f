"""The three scenarios: launch overhead, scaling with the number of references, contenders."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.contenders import Contender, backend_environ
from bench.results import Results
from bench.servers import Stack
from bench.timing import Job, Spawner, alternate
from bench.workload import Secret, Stores, Workload

LATENCIES = (0.0, 0.05)  # seconds added to every backend request
SCALING = ("vault/fields", "vault/paths", "aws-ssm", "aws-sm", "azure-kv", "cosmian-kms")
CONTENDED = ("vault/paths", "aws-ssm", "azure-kv", "cosmian-kms")  # one request per ref for all
TRUE = ["/bin/true"]


@dataclass(frozen=True)
class Plan:
    """How much to run: the full benchmark, or a short smoke run (`--quick`)."""

    quick: bool
    only: bool = False  # some workloads' scaling at 50 ms, N=1 and N=100 (`--only`)

    @property
    def sizes(self) -> tuple[int, ...]:
        if self.only:
            return (1, 100)
        return (1, 10, 100) if self.quick else (1, 10, 100, 1000)

    @property
    def contender_sizes(self) -> tuple[int, ...]:
        return (1, 10) if self.quick else (1, 10, 100)

    def repetitions(self, n: int) -> int:
        """Runs of kms-launch's scaling cells."""
        if self.quick:
            return 3
        return 3 if n >= 1000 else 7 if n <= 10 else 5

    def contender_repetitions(self, n: int) -> int:
        """Runs of each contender (jobs slower than 8 s get 3, see timing.alternate)."""
        del n
        return 3 if self.quick else 5

    @property
    def overhead_repetitions(self) -> int:
        return 5 if self.quick else 15


@dataclass
class Bench:
    stack: Stack
    stores: Stores
    spawner: Spawner
    contenders: dict[str, Contender]
    base_environ: dict[str, str]
    check_python: str  # runs bench/check_server.py
    results: Results
    plan: Plan

    # -- scenarios

    def overhead(self, scratch: Path) -> None:
        """`file` backend, one reference: kms-launch against `python -c pass` and against the
        minimal Typer app that parses the same config with tomlkit, on Typer 0.28 and 0.29."""
        workload = file_workload(scratch)
        keys = ["python", "floor", "kms-launch", "floor-029", "kms-launch-029"]
        jobs = [self._job(self.contenders[key], workload) for key in keys]
        self._check(workload, [self.contenders["kms-launch"], self.contenders["kms-launch-029"]])
        say(f"overhead: {len(jobs)} launchers x {self.plan.overhead_repetitions} runs")
        series = alternate(self.spawner, jobs, self.plan.overhead_repetitions, self.stack)
        self.results.add("overhead", 0, "file", 1, series)

    def scaling(
        self, labels: Sequence[str] = SCALING, latencies: Sequence[float] = LATENCIES
    ) -> None:
        """kms-launch on every backend and N, the backends alternating run by run."""
        for latency in latencies:
            self.stack.set_latency(latency)
            for n in self.plan.sizes:
                workloads = [self.stores.workload(label, n) for label in labels]
                kms_launch = self.contenders["kms-launch"]
                if n <= 10:
                    for workload in workloads:
                        self._check(workload, [kms_launch])
                jobs = [self._job(kms_launch, w, key=w.label) for w in workloads]
                say(f"scaling: {latency * 1000:.0f} ms, N={n}: {len(jobs)} backends")
                series = alternate(
                    self.spawner, jobs, self.plan.repetitions(n), self.stack, warmup=n < 1000
                )
                for workload in workloads:
                    self.results.add(
                        "scaling",
                        latency,
                        workload.label,
                        n,
                        {"kms-launch": series[workload.label]},
                    )

    def contenders_run(self, latency: float = 0.05) -> None:
        """Every contender that reads a backend, against kms-launch, on the same workload."""
        self.stack.set_latency(latency)
        for label in CONTENDED:
            backend = label.split("/")[0]
            chosen = [c for c in self.contenders.values() if backend in c.backends]
            for n in self.plan.contender_sizes:
                workload = self.stores.workload(label, n)
                if n <= 10:
                    self._check(workload, chosen)
                jobs = [self._job(contender, workload) for contender in chosen]
                say(f"contenders: {label}, N={n}: {', '.join(c.key for c in chosen)}")
                repetitions = self.plan.contender_repetitions(n)
                series = alternate(self.spawner, jobs, repetitions, self.stack)
                self.results.add("contenders", latency, label, n, series)

    # -- plumbing

    def _job(self, contender: Contender, workload: Workload, key: str | None = None) -> Job:
        return Job(
            key or contender.key,
            workload.backend,
            contender.argv(workload, TRUE),
            self.environ(contender, workload),
            str(workload.directory),
        )

    def environ(self, contender: Contender, workload: Workload) -> dict[str, str]:
        backend_env = (
            {"KMS_SECRETS_DIR": str(workload.directory / "secrets")}
            if workload.backend == "file"
            else self.stack.environ(workload.backend)
        )
        return {
            **self.base_environ,
            **backend_environ(contender, backend_env),
            **contender.environ,
        }

    def _check(self, workload: Workload, contenders: Sequence[Contender]) -> None:
        """Before timing: every contender delivers exactly the expected values to the server."""
        out = workload.directory / "check.json"
        server = [self.check_python, str(Path(__file__).with_name("check_server.py")), "{config}"]
        for contender in contenders:
            out.unlink(missing_ok=True)
            environ = {**self.environ(contender, workload), "BENCH_CHECK_OUT": str(out)}
            job = Job(
                contender.key,
                workload.backend,
                contender.argv(workload, server),
                environ,
                str(workload.directory),
            )
            self.spawner.launch(job)
            got = json.loads(out.read_text())
            if got != workload.expected():
                raise RuntimeError(f"{contender.key} delivered wrong values for {workload.label}")


def file_workload(scratch: Path) -> Workload:
    """One reference on the `file` backend (a systemd credential or a mounted secret)."""
    directory = scratch / "file" / "1"
    (directory / "secrets").mkdir(parents=True, exist_ok=True)
    value = "file-0-Zk3qP9sWm2xL"
    (directory / "secrets" / "db-password").write_text(value + "\n")
    return Workload("file", "", (Secret("secret://db-password", value, ()),), directory)


def say(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)
