#!/usr/bin/env python3
"""A stand-in for cosmian_kms run as PID 1: handles SIGTERM and exits with its own status.

It installs a SIGTERM handler (PID 1 of a PID namespace only gets the signals it handles), then
writes a JSON report to $SIGTERM_SERVER_REPORT (atomically, so its existence means "ready for
SIGTERM"): its pid, argv and what sits behind its config path (link target, seals, text). On
SIGTERM it writes $SIGTERM_SERVER_REPORT.sigterm and exits with $SIGTERM_SERVER_EXIT (default 42).
Without a SIGTERM within $SIGTERM_SERVER_WAIT seconds (default 60) it exits 3.
"""

import fcntl
import json
import os
import signal
import sys
import time

REPORT = os.environ["SIGTERM_SERVER_REPORT"]
EXIT_ON_SIGTERM = int(os.environ.get("SIGTERM_SERVER_EXIT", "42"))
EXIT_ON_TIMEOUT = 3


def write_json(path: str, data: dict) -> None:
    with open(f"{path}.tmp", "w") as out:
        json.dump(data, out)
    os.replace(f"{path}.tmp", path)


def on_sigterm(signum: int, _frame: object) -> None:
    write_json(f"{REPORT}.sigterm", {"signal": signum, "pid": os.getpid()})
    os._exit(EXIT_ON_SIGTERM)


def describe_config(argv: list[str]) -> dict:
    if "-c" not in argv:
        return {}
    path = argv[argv.index("-c") + 1]
    fd = int(path.rsplit("/", 1)[1]) if path.startswith("/proc/self/fd/") else None
    with open(path, encoding="utf-8") as config:
        text = config.read()
    return {
        "path": path,
        "link": os.readlink(path),
        "seals": fcntl.fcntl(fd, fcntl.F_GET_SEALS) if fd is not None else None,
        "text": text,
    }


def main() -> int:
    signal.signal(signal.SIGTERM, on_sigterm)
    write_json(
        REPORT,
        {
            "pid": os.getpid(),
            "ppid": os.getppid(),
            "argv": sys.argv,
            "config": describe_config(sys.argv),
        },
    )
    deadline = time.monotonic() + float(os.environ.get("SIGTERM_SERVER_WAIT", "60"))
    while time.monotonic() < deadline:
        time.sleep(0.05)  # the handler runs (and exits) during the sleep
    return EXIT_ON_TIMEOUT


if __name__ == "__main__":
    sys.exit(main())
