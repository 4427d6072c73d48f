"""A small process that starts the timed launches and reports wall time and rusage.

Why not spawn from the benchmark itself: a child made by vfork/posix_spawn (or fork) runs on the
parent's address space until its exec, and Linux records that address space's RSS high-water
mark in the child's ru_maxrss at exec. Spawned from the benchmark (~80 MiB: servers' clients,
cryptography) every launcher would report at least ~80 MiB. Spawned from this process (stdlib only,
run with -I -S: ~8 MiB) the floor is far below any launcher's own peak.

Protocol: one JSON object per line on stdin ({"argv", "env", "cwd", "stderr", "timeout"}), one
JSON object per line on stdout ({"seconds", "maxrss_kib", "cpu_seconds", "exit"})."""

from __future__ import annotations

import json
import os
import signal
import sys
import time


def main() -> None:
    devnull = os.open(os.devnull, os.O_RDWR)
    for line in sys.stdin:
        job = json.loads(line)
        os.chdir(job["cwd"])
        errors = os.open(job["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        actions = [
            (os.POSIX_SPAWN_DUP2, devnull, 0),
            (os.POSIX_SPAWN_DUP2, devnull, 1),
            (os.POSIX_SPAWN_DUP2, errors, 2),
        ]
        started = time.perf_counter()
        pid = os.posix_spawn(job["argv"][0], job["argv"], job["env"], file_actions=actions)
        signal.signal(signal.SIGALRM, lambda *_, pid=pid: os.kill(pid, signal.SIGKILL))
        signal.alarm(int(job["timeout"]))
        _, status, usage = os.wait4(pid, 0)
        elapsed = time.perf_counter() - started
        signal.alarm(0)
        os.close(errors)
        answer = {
            "seconds": elapsed,
            "maxrss_kib": usage.ru_maxrss,
            "cpu_seconds": usage.ru_utime + usage.ru_stime,
            "exit": os.waitstatus_to_exitcode(status),
        }
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
