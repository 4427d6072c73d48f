#!/usr/bin/python3
"""A stand-in for cosmian_kms under real systemd and podman: reports what it received, then serves
(sleeps) until SIGTERM.

On start it writes standin-report.json in its working directory (the unit's StateDirectory, the
image's WORKDIR volume), atomically, so the file's existence means "up, SIGTERM handler in place":
pid, ppid, argv, environment, what sits behind its config path (memfd link, seals, text), the
files of $CREDENTIALS_DIRECTORY and its privileges. It prints one line without any secret to
stdout (the journal, or podman logs). On SIGTERM it writes standin-stopped.json and exits with the config's
[standin] exit_on_sigterm (default 0), so a test can tell its status from the launcher's.
"""

import fcntl
import json
import os
import signal
import sys
import time
import tomllib

REPORT = "standin-report.json"
STOPPED = "standin-stopped.json"


def write_json(name: str, data: dict) -> None:
    with open(f"{name}.tmp", "w") as out:
        json.dump(data, out)
    os.replace(f"{name}.tmp", name)


def describe_config(argv: list[str]) -> dict:
    path = argv[argv.index("-c") + 1]
    fd = int(path.rsplit("/", 1)[1])
    with open(path, encoding="utf-8") as config:
        text = config.read()
    return {
        "path": path,
        "link": os.readlink(path),
        "seals": fcntl.fcntl(fd, fcntl.F_GET_SEALS),
        "text": text,
    }


def credentials() -> dict:
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    if not directory:
        return {}
    found = {}
    for name in sorted(os.listdir(directory)):
        with open(os.path.join(directory, name), encoding="utf-8", errors="replace") as file:
            found[name] = file.read()
    return found


def status() -> dict:
    """Privileges as the kernel sees them: effective capabilities, no_new_privs, user."""
    with open("/proc/self/status") as file:
        fields = dict(line.rstrip("\n").split(":\t", 1) for line in file if ":\t" in line)
    return {"CapEff": fields["CapEff"], "NoNewPrivs": fields["NoNewPrivs"], "uid": os.getuid()}


def main() -> int:
    config = describe_config(sys.argv)
    exit_on_sigterm = int(tomllib.loads(config["text"]).get("standin", {}).get("exit_on_sigterm", 0))

    def on_sigterm(signum: int, _frame: object) -> None:
        write_json(STOPPED, {"signal": signum, "pid": os.getpid()})
        print(f"cosmian_kms stand-in: stopped by signal {signum}", flush=True)
        os._exit(exit_on_sigterm)

    signal.signal(signal.SIGTERM, on_sigterm)
    write_json(REPORT, {
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "argv": sys.argv,
        "environ": dict(os.environ),
        "config": config,
        "credentials": credentials(),
        "status": status(),
    })
    print(f"cosmian_kms stand-in: serving as pid {os.getpid()}", flush=True)
    while True:
        time.sleep(3600)  # the handler runs (and exits) during the sleep


if __name__ == "__main__":
    sys.exit(main())
