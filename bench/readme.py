"""The README's Performance section: created once before `## Development` if missing; afterwards
only the text between the bench markers is replaced."""

from __future__ import annotations

from pathlib import Path

START, END = "<!-- bench:start -->", "<!-- bench:end -->"

SECTION = f"""## Performance

Measured by the benchmark in `bench/`, which starts its own OpenBao and moto servers and the Azure
and Cosmian KMS fakes, adds latency to every request (a proxy in front of the plain-HTTP servers;
the HTTPS fakes delay their own answers), and times whole launches that exec `/bin/true`:

```sh
.venv/bin/pip install -e '.[test,bench]'
.venv/bin/python bench/run.py            # full run, ~10 minutes; rewrites this section and the plot
.venv/bin/python bench/run.py --quick    # ~2 minutes, fewer sizes and runs; prints only
```

kms-launch is timed as users run it: installed from a wheel of this tree (not editable) into
`bench/.venvs/launch`, with every dependency at the version of the project's `.venv`. Contenders
alternate run by run; each cell is the median (min-max) of its runs, after one untimed warm-up.
Peak RSS is `ru_maxrss` from `wait4` (Linux keeps the launcher's peak across its exec of
`/bin/true`). The shell scripts and the serial resolver are in `bench/shell/` and
`bench/serial_resolver.py`; the serial resolver reproduces the *strategy* of the Cosmian KMS's
built-in resolver (one request per reference, a fresh client each time), not the KMS itself.

What limits the numbers, measured (see the Targets table below): the remote backends keep at most
16 requests in flight (`CONCURRENCY` in `launcher/resolve.py`), so N distinct Vault paths, Key
Vault secrets or KMS objects take ceil(N/16) round trips; each request costs the launcher about
0.7 ms of CPU in `requests`/`hvac` (0.42 ms for a bare `requests.Session` GET here, 0.16 ms with
`urllib3` alone), and the fakes, the proxy and the launcher share this machine's 2 cores. Typer
stays below 0.29: 0.29 imports pydantic on every run.

{START}
{END}

"""


def update(readme: Path, generated: str) -> None:
    text = readme.read_text()
    if START not in text:
        anchor = text.index("## Development")
        text = text[:anchor] + SECTION + text[anchor:]
    before, rest = text.split(START, 1)
    _, after = rest.split(END, 1)
    readme.write_text(f"{before}{START}\n{generated.strip()}\n{END}{after}")
