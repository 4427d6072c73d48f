"""Timing whole launches: wall time from spawn to exit, and peak RSS from wait4 (Linux keeps the
peak of the launcher across its exec of /bin/true, so ru_maxrss is the launcher's own peak)."""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


class LaunchFailed(RuntimeError):
    pass


@dataclass(frozen=True)
class Run:
    seconds: float
    rss_mib: float
    cpu_seconds: float  # user + system time of the launch and every process it waited for
    requests: Mapping[str, int]


@dataclass
class Series:
    """The runs of one contender on one workload."""

    runs: list[Run] = field(default_factory=list)

    @property
    def seconds(self) -> list[float]:
        return [run.seconds for run in self.runs]

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def low(self) -> float:
        return min(self.seconds)

    @property
    def high(self) -> float:
        return max(self.seconds)

    @property
    def rss_mib(self) -> float:
        return statistics.median(run.rss_mib for run in self.runs)

    @property
    def cpu_seconds(self) -> float:
        return statistics.median(run.cpu_seconds for run in self.runs)

    @property
    def requests(self) -> Mapping[str, int]:
        """Requests of one run (the last); every run of a contender makes the same ones."""
        return self.runs[-1].requests


class Counter(Protocol):
    """What counts the requests the backends' servers receive."""

    def reset(self) -> None: ...

    def requests(self, backend: str) -> Mapping[str, int]: ...


@dataclass(frozen=True)
class Job:
    """One contender's command on one workload."""

    key: str
    backend: str
    argv: Sequence[str]
    environ: Mapping[str, str]
    cwd: str


class Spawner:
    """The small process that spawns and reaps every timed launch (see tests/spawner.py)."""

    def __init__(self, scratch: Path) -> None:
        self._stderr = scratch / "launch.stderr"
        base = getattr(sys, "_base_executable", sys.executable)
        self._process = subprocess.Popen(
            [base, "-I", "-S", str(Path(__file__).parents[1] / "tests" / "spawner.py")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={"PATH": os.defpath},
        )
        if self._process.stdin is None or self._process.stdout is None:
            raise RuntimeError("no pipes to the spawner")
        self._requests, self._answers = self._process.stdin, self._process.stdout

    def __enter__(self) -> Spawner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._process.poll() is None:
            self._requests.close()
            self._process.wait(timeout=10)

    def launch(self, job: Job, timeout: float = 600) -> tuple[float, float, float]:
        """Run once: (wall seconds, peak RSS MiB, CPU seconds). LaunchFailed on a non-zero exit."""
        argv = list(job.argv)
        argv[0] = shutil.which(argv[0], path=job.environ.get("PATH")) or argv[0]
        request = {
            "argv": argv,
            "env": dict(job.environ),
            "cwd": job.cwd,
            "stderr": str(self._stderr),
            "timeout": timeout,
        }
        self._requests.write(json.dumps(request) + "\n")
        self._requests.flush()
        answer = json.loads(self._answers.readline())
        if answer["exit"] != 0:
            tail = self._stderr.read_text(errors="replace")[-2000:]
            raise LaunchFailed(f"{job.key} exited {answer['exit']}: {tail}")
        return answer["seconds"], answer["maxrss_kib"] / 1024, answer["cpu_seconds"]


def alternate(
    spawner: Spawner,
    jobs: Sequence[Job],
    repetitions: int,
    counter: Counter,
    warmup: bool = True,
    slow: float = 8.0,
    slow_repetitions: int = 3,
) -> dict[str, Series]:
    """Run every job `repetitions` times, the order rotating run by run so that drift of the
    machine hits every contender alike, after one untimed warm-up run each (page cache, .pyc).
    A job whose warm-up took more than `slow` seconds runs `slow_repetitions` times in all, its
    warm-up counted (a cold cache is noise next to many seconds), so the benchmark stays short."""
    series = {job.key: Series() for job in jobs}
    wanted = dict.fromkeys(series, repetitions)
    if warmup:
        for job in jobs:
            run = _timed(spawner, job, counter)
            if run.seconds > slow:
                wanted[job.key] = slow_repetitions
                series[job.key].runs.append(run)
    for repetition in range(max(wanted.values())):
        shift = repetition % len(jobs)
        for job in [*jobs[shift:], *jobs[:shift]]:
            if len(series[job.key].runs) < wanted[job.key]:
                series[job.key].runs.append(_timed(spawner, job, counter))
    return series


def _timed(spawner: Spawner, job: Job, counter: Counter) -> Run:
    counter.reset()
    seconds, rss, cpu = spawner.launch(job)
    return Run(seconds, rss, cpu, dict(counter.requests(job.backend)))
