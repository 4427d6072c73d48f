#!/usr/bin/env python3
"""A stand-in for cosmian_kms: reports what it received (pid, argv, config fd, seals, env, config)."""

import base64
import fcntl
import json
import os
import sys
import tomllib


def describe_fd_path(path: str) -> dict:
    """What sits behind a /proc/self/fd/N path: link target, seals, bytes, whether it is writable."""
    fd_number = int(path.rsplit("/", 1)[1])
    info: dict = {"path": path, "link": os.readlink(path)}
    info["seals"] = fcntl.fcntl(fd_number, fcntl.F_GET_SEALS)
    info["mode"] = os.fstat(fd_number).st_mode
    with open(path, "rb") as first, open(path, "rb") as second:  # reopened twice: re-readable
        data = first.read()
        info["reread_equal"] = second.read() == data
    info["bytes_b64"] = base64.b64encode(data).decode()
    try:
        with open(path, "r+b") as writable:
            writable.write(b"x")
        info["write_errno"] = 0
    except OSError as error:
        info["write_errno"] = error.errno
    try:
        os.ftruncate(fd_number, 0)
        info["truncate_errno"] = 0
    except OSError as error:
        info["truncate_errno"] = error.errno
    return info


def main() -> int:
    report: dict = {
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "argv": sys.argv,
        "environ": dict(os.environ),
    }
    config_path = None
    if "-c" in sys.argv:
        config_path = sys.argv[sys.argv.index("-c") + 1]
    elif os.environ.get("STANDIN_CONFIG_ARG"):
        config_path = sys.argv[int(os.environ["STANDIN_CONFIG_ARG"])]
    if config_path:
        report["config"] = describe_fd_path(config_path)
        raw = base64.b64decode(report["config"]["bytes_b64"])
        report["config_text"] = raw.decode("utf-8")
        report["parsed"] = tomllib.loads(report["config_text"])
        files = {}
        for value in _strings(report["parsed"]):
            if value.startswith("/proc/self/fd/"):
                files[value] = describe_fd_path(value)
        report["files"] = files
    with open(os.environ["STANDIN_REPORT"], "w") as out:
        json.dump(report, out)
    return int(os.environ.get("STANDIN_EXIT", "0"))


def _strings(node):
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)


if __name__ == "__main__":
    sys.exit(main())
