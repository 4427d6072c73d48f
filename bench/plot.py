"""The plot: launch time against the number of references, one panel per backend, every contender."""

from __future__ import annotations

from pathlib import Path

from bench.report import CONTENDER_LABELS
from bench.results import Record, Results

PANELS = (
    ("vault", ("vault/paths", "vault/fields")),
    ("aws-ssm", ("aws-ssm",)),
    ("azure-kv", ("azure-kv",)),
    ("cosmian-kms", ("cosmian-kms",)),
)
COLOURS = {
    "kms-launch": "#1f77b4",
    "serial": "#d62728",
    "shell-bao": "#2ca02c",
    "shell-aws": "#2ca02c",
    "vault-cli": "#9467bd",
}


def draw(results: Results, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, 2, figsize=(11, 8.5), sharex=True)
    for axis, (title, workloads) in zip(axes.flat, PANELS, strict=True):
        for workload in workloads:
            layout = " (N/4 paths)" if workload == "vault/fields" else ""
            style = "--" if workload == "vault/fields" else "-"
            _line(axis, _points(results, "scaling", "kms-launch", workload, 50),
                  f"kms-launch{layout}", COLOURS["kms-launch"], style)  # fmt: skip
            if workload != "vault/fields":
                _line(axis, _points(results, "scaling", "kms-launch", workload, 0),
                      "kms-launch, 0 ms latency", "#7f7f7f", ":")  # fmt: skip
        contenders = dict.fromkeys(
            r.contender
            for r in results.records
            if r.scenario == "contenders"
            and r.workload in workloads
            and r.contender != "kms-launch"
        )
        for key in contenders:
            points = _points(results, "contenders", key, workloads[0], 50)
            _line(axis, points, CONTENDER_LABELS[key].replace("`", ""), COLOURS.get(key, "k"), "-")
            estimate = _extrapolated(points)
            if estimate:
                axis.plot(*zip(*estimate, strict=True), linestyle=(0, (2, 3)),
                          color=COLOURS.get(key, "k"), linewidth=1.2)  # fmt: skip
        axis.set_title(title)
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=7.5, loc="upper left")
    for axis in axes[1]:
        axis.set_xlabel("references in the config (N)")
    for axis in axes[:, 0]:
        axis.set_ylabel("whole launch, median (s)")
    figure.suptitle(
        "Launch time (exec /bin/true) against N, 50 ms added per request\n"
        "(fine dashes: contenders extrapolated linearly to N=1000, not run)",
        fontsize=11,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _points(
    results: Results, scenario: str, contender: str, workload: str, latency_ms: int
) -> list[tuple[int, float]]:
    found: list[Record] = [
        r
        for r in results.records
        if (r.scenario, r.contender, r.workload, r.latency_ms)
        == (scenario, contender, workload, latency_ms)
    ]
    return sorted((r.n, r.median) for r in found)


def _line(
    axis: object, points: list[tuple[int, float]], label: str, colour: str, style: str
) -> None:
    if points:
        xs, ys = zip(*points, strict=True)
        axis.plot(xs, ys, style, marker="o", markersize=4, color=colour, label=label)  # type: ignore[attr-defined]


def _extrapolated(points: list[tuple[int, float]]) -> list[tuple[int, float]]:
    """From the largest measured N to 1000, at the cost per reference seen between N=1 and it."""
    if len(points) < 2 or points[-1][0] >= 1000:
        return []
    (n1, t1), (n2, t2) = points[0], points[-1]
    per_reference = (t2 - t1) / (n2 - n1)
    return [(n2, t2), (1000, t2 + per_reference * (1000 - n2))]
