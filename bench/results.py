"""What a benchmark run measured, kept as JSON in bench/out/results.json so the report and the plot
can be redrawn without measuring again (`bench/run.py --report-only`)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.timing import Run, Series


@dataclass
class Record:
    """The runs of one contender on one workload in one scenario."""

    scenario: str  # "overhead", "scaling" or "contenders"
    latency_ms: int
    workload: str  # "file", "vault/paths", "vault/fields", "aws-ssm", "azure-kv", "cosmian-kms"
    n: int
    contender: str
    runs: list[Run]

    @property
    def series(self) -> Series:
        return Series(self.runs)

    @property
    def median(self) -> float:
        return self.series.median


@dataclass
class Results:
    mode: str  # "full" or "quick"
    records: list[Record] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)  # machine, venvs, missing tools, imports

    def add(
        self, scenario: str, latency: float, workload: str, n: int, series: dict[str, Series]
    ) -> None:
        for contender, measured in series.items():
            self.records.append(
                Record(scenario, round(latency * 1000), workload, n, contender, measured.runs)
            )

    def find(
        self, scenario: str, contender: str, workload: str, n: int, latency_ms: int
    ) -> Record | None:
        for record in self.records:
            if (
                record.scenario,
                record.contender,
                record.workload,
                record.n,
                record.latency_ms,
            ) == (
                scenario,
                contender,
                workload,
                n,
                latency_ms,
            ):
                return record
        return None

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, path: Path) -> Results:
        data = json.loads(path.read_text())
        records = [
            Record(**{**record, "runs": [Run(**run) for run in record["runs"]]})
            for record in data["records"]
        ]
        return cls(data["mode"], records, data["notes"])
