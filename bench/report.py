"""The Markdown report: results tables, and each target with what was measured."""

from __future__ import annotations

from collections.abc import Iterator

from bench.results import Record, Results

WORKLOAD_LABELS = {
    "vault/fields": "vault (N fields over N/4 paths)",
    "vault/paths": "vault (N paths)",
    "aws-ssm": "aws-ssm",
    "aws-sm": "aws-sm",
    "azure-kv": "azure-kv",
    "cosmian-kms": "cosmian-kms",
}
CONTENDER_LABELS = {
    "python": "`python -c pass`",
    "floor": "minimal Typer app, Typer 0.28",
    "kms-launch": "kms-launch",
    "floor-029": "minimal Typer app, Typer 0.29",
    "kms-launch-029": "kms-launch on Typer 0.29",
    "serial": "serial resolver (the KMS resolver's strategy)",
    "shell-bao": "shell: `bao kv get` + envsubst",
    "shell-aws": "shell: `aws ssm get-parameter` + envsubst",
    "vault-cli": "`vault-cli template`",
}
RSS_LIMITS = {"aws-ssm": 60.0, "aws-sm": 60.0}  # MiB; 45 for every other backend
DEFAULT_RSS_LIMIT = 45.0


def duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds >= 10 else f"{seconds * 1000:.0f} ms"


def cell(record: Record | None) -> str:
    """`median (min-max)`, with the number of runs when there were fewer than 5."""
    if record is None:
        return "-"
    series = record.series
    low, high = duration(series.low), duration(series.high)
    runs = f", {len(series.runs)} runs" if len(series.runs) < 5 else ""
    return f"{duration(series.median)} ({low.split()[0]}-{high}{runs})"


def requests(record: Record | None) -> str:
    if record is None:
        return "-"
    counts = record.series.requests
    if set(counts) == {"reads", "other"}:
        return f"{counts['reads']}" + (f" +{counts['other']}" if counts["other"] else "")
    if "token" in counts:
        return f"{counts['secrets']} +{counts['token']}t +{counts['discovery']}d"
    return " ".join(str(value) for value in counts.values())


def ratio(numerator: Record | None, denominator: Record | None) -> float | None:
    if numerator is None or denominator is None:
        return None
    return numerator.median / denominator.median


def render(results: Results) -> str:
    return "\n".join(
        [
            *overhead_table(results),
            "",
            *scaling_table(results, 50),
            "",
            *scaling_table(results, 0),
            "",
            *contenders_table(results),
            "",
            *imports_table(results),
            "",
            *targets_table(results),
        ]
    )


def overhead_table(results: Results) -> Iterator[str]:
    yield "**Launch overhead** (`file` backend, 1 reference, exec `/bin/true`):"
    yield ""
    yield "| launcher | median (min-max) | runs | peak RSS | vs minimal Typer app |"
    yield "|---|---|---|---|---|"
    floors = {
        "kms-launch": "floor",
        "floor": "floor",
        "kms-launch-029": "floor-029",
        "floor-029": "floor",
    }
    for key in ("python", "floor", "kms-launch", "floor-029", "kms-launch-029"):
        record = results.find("overhead", key, "file", 1, 0)
        if record is None:
            continue
        floor = results.find("overhead", floors.get(key, ""), "file", 1, 0)
        versus = ratio(record, floor)
        shown = f"{versus:.2f}x" if versus is not None and key != "floor" else ""
        if key == "floor-029" and versus is not None:
            shown = f"{versus:.2f}x the 0.28 app"
        yield (
            f"| {CONTENDER_LABELS[key]} | {cell(record)} | {len(record.runs)} |"
            f" {record.series.rss_mib:.1f} MiB | {shown} |"
        )


def scaling_table(results: Results, latency_ms: int) -> Iterator[str]:
    sizes = sorted({r.n for r in results.records if r.scenario == "scaling"})
    yield (
        f"**Scaling**: kms-launch, {latency_ms} ms added to every request, median (min-max) of"
        " whole launches; requests per launch (vault: KV reads; aws-ssm: GetParameters calls;"
        " aws-sm: BatchGetSecretValue calls;"
        " azure-kv: secrets +t token +d OpenID discovery; cosmian-kms: KMIP Gets); peak RSS"
        " before exec:"
    )
    yield ""
    head = " | ".join(f"N={n}" for n in sizes)
    yield f"| backend | {head} | N=100 / N=1 | N=1000 / N=1 | requests (by N) | peak RSS |"
    yield "|---|" + "---|" * (len(sizes) + 4)
    for workload, label in WORKLOAD_LABELS.items():
        found = {n: results.find("scaling", "kms-launch", workload, n, latency_ms) for n in sizes}
        if not any(found.values()):
            continue
        cells = " | ".join(cell(found[n]) for n in sizes)
        ratios = [ratio(found.get(n), found.get(1)) for n in (100, 1000)]
        shown = " | ".join(f"{r:.2f}x" if r is not None else "-" for r in ratios)
        counts = " / ".join(requests(found[n]) for n in sizes)
        rss = [record.series.rss_mib for record in found.values() if record is not None]
        yield f"| {label} | {cells} | {shown} | {counts} | {min(rss):.0f}-{max(rss):.0f} MiB |"


def contenders_table(results: Results) -> Iterator[str]:
    records = [r for r in results.records if r.scenario == "contenders"]
    if not records:
        return
    latency_ms = records[0].latency_ms
    sizes = sorted({r.n for r in records})
    yield (
        f"**Contenders** on the same secrets and servers, {latency_ms} ms per request (vault:"
        " one path per reference, so every contender needs N reads):"
    )
    yield ""
    head = " | ".join(f"N={n}" for n in sizes)
    yield f"| backend | launcher | {head} | requests at N={sizes[-1]} | kms-launch is |"
    yield "|---|---|" + "---|" * (len(sizes) + 2)
    for workload in dict.fromkeys(r.workload for r in records):
        keys = list(dict.fromkeys(r.contender for r in records if r.workload == workload))
        for key in keys:
            found = {n: results.find("contenders", key, workload, n, latency_ms) for n in sizes}
            ours = results.find("contenders", "kms-launch", workload, sizes[-1], latency_ms)
            versus = ""
            if key != "kms-launch":
                speedup = ratio(found[sizes[-1]], ours)
                versus = f"{speedup:.1f}x faster at N={sizes[-1]}" if speedup else ""
            cells = " | ".join(cell(found[n]) for n in sizes)
            yield (
                f"| {workload.split('/')[0]} | {CONTENDER_LABELS[key]} | {cells} |"
                f" {requests(found[sizes[-1]])} | {versus} |"
            )


def imports_table(results: Results) -> Iterator[str]:
    imports = results.notes.get("imports")
    if not imports:
        return
    yield "**Imports** (`python -X importtime`, one launch per backend):"
    yield ""
    yield "| backend | third-party packages imported | import time (sum of self times) |"
    yield "|---|---|---|"
    for backend, found in imports.items():
        yield f"| {backend} | {', '.join(found['packages'])} | {found['total_ms']:.0f} ms |"


def targets_table(results: Results) -> Iterator[str]:
    yield "**Targets** (ratios within this run):"
    yield ""
    yield "| target | measured | met |"
    yield "|---|---|---|"
    for target, measured, met in targets(results):
        yield f"| {target} | {measured} | {'yes' if met else '**no**'} |"


def targets(results: Results) -> Iterator[tuple[str, str, bool]]:
    overhead = ratio(
        results.find("overhead", "kms-launch", "file", 1, 0),
        results.find("overhead", "floor", "file", 1, 0),
    )
    if overhead is not None:
        yield (
            "overhead: kms-launch (file, 1 ref) ≤ 1.25x minimal Typer app",
            f"{overhead:.2f}x",
            (overhead <= 1.25),
        )
    imports = results.notes.get("imports", {})
    if "file" in imports:
        from bench.importtime import SDKS

        sdks = [p for p in imports["file"]["packages"] if p in SDKS]
        yield "`--backend file` imports no backend SDK", ", ".join(sdks) or "none", not sdks
        avoidable = [p for p in imports["file"]["packages"] if p in ("rich", "pydantic")]
        yield (
            "nothing avoidable (rich, pydantic) on the launch path",
            ", ".join(avoidable) or "none",
            not avoidable,
        )
    for workload in WORKLOAD_LABELS:
        one = results.find("scaling", "kms-launch", workload, 1, 50)
        for n, limit in ((100, 1.6), (1000, 4.0)):
            value = ratio(results.find("scaling", "kms-launch", workload, n, 50), one)
            if value is not None:
                yield (
                    f"{workload}: {n} refs ≤ {limit}x 1 ref at 50 ms",
                    f"{value:.2f}x",
                    value <= limit,
                )
    yield from _request_targets(results)
    yield from _contender_targets(results)
    for workload in WORKLOAD_LABELS:
        found = [
            r for r in results.records if r.workload == workload and r.contender == "kms-launch"
        ]
        if found:
            limit = RSS_LIMITS.get(workload, DEFAULT_RSS_LIMIT)
            peak = max(r.series.rss_mib for r in found)
            yield f"{workload}: peak RSS ≤ {limit:.0f} MiB", f"{peak:.1f} MiB", peak <= limit


def _request_targets(results: Results) -> Iterator[tuple[str, str, bool]]:
    for n in (100, 1000):
        vault = results.find("scaling", "kms-launch", "vault/fields", n, 50)
        if vault is not None:
            reads = vault.series.requests["reads"]
            paths = -(-n // 4)
            yield (
                f"vault: one read per path (N={n}: {paths} paths)",
                f"{reads} reads",
                (reads == paths),
            )
        ssm = results.find("scaling", "kms-launch", "aws-ssm", n, 50)
        if ssm is not None:
            calls = ssm.series.requests["calls"]
            yield f"aws-ssm: one call per 10 names (N={n})", f"{calls} calls", calls == -(-n // 10)
        sm = results.find("scaling", "kms-launch", "aws-sm", n, 50)
        if sm is not None:
            calls = sm.series.requests["calls"]
            yield f"aws-sm: one call per 20 secrets (N={n})", f"{calls} calls", calls == -(-n // 20)
        azure = results.find("scaling", "kms-launch", "azure-kv", n, 50)
        if azure is not None:
            tokens = azure.series.requests["token"]
            yield f"azure-kv: one token per run (N={n})", f"{tokens} token requests", tokens == 1


def _contender_targets(results: Results) -> Iterator[tuple[str, str, bool]]:
    records = [r for r in results.records if r.scenario == "contenders"]
    sizes = sorted({r.n for r in records})
    if not sizes:
        return
    top = 100 if 100 in sizes else sizes[-1]
    for workload in dict.fromkeys(r.workload for r in records):
        ours = results.find("contenders", "kms-launch", workload, top, 50)
        for record in records:
            if record.workload != workload or record.n != top or record.contender == "kms-launch":
                continue
            speedup = ratio(record, ours)
            if speedup is not None:
                yield (
                    f"{workload}: N={top} ≥ 5x faster than {CONTENDER_LABELS[record.contender]}",
                    f"{speedup:.1f}x",
                    speedup >= 5,
                )
        one = ratio(
            results.find("contenders", "kms-launch", workload, 1, 50),
            results.find("contenders", "serial", workload, 1, 50),
        )
        if one is not None:
            yield f"{workload}: N=1 ≤ 1.5x the serial resolver", f"{one:.2f}x", one <= 1.5
