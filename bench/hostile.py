"""The hostile-backend table: every fault against every remote backend, exit code and wall time.

    .venv/bin/python -m bench.hostile [--timeout SECONDS]

Runs the real launcher (check mode) against tests/servers/hostile.py once per case and prints a
Markdown table: the case, the backend, the exit code, the time from spawn to exit, whether it
ended by the deadline + 1 s, and how many bytes of any credential reached a redirect target."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.servers import hostile
from tests.servers.azure_fake import AzureFake
from tests.servers.tls import Authority
from tests.test_hostile import FAULTS, KINDS, MALFORMED, PLAIN, Target, aim

_STEERING = ("KMS_", "VAULT_", "AWS_", "AZURE_", "COSMIAN_")


def run(target: Target, timeout: float, directory: Path) -> tuple[int, float, str]:
    config = directory / "kms.toml"
    config.write_text(target.config())
    env = {k: v for k, v in os.environ.items() if not k.startswith(_STEERING)}
    env.update(target.env, HOME=str(directory))
    argv = [sys.executable, "-m", "launcher", "--check", "--backend", target.backend]
    started = time.monotonic()
    result = subprocess.run(
        [*argv, "-c", str(config), "--timeout", str(timeout)],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    return result.returncode, time.monotonic() - started, result.stdout + result.stderr


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench.hostile", description=__doc__)
    parser.add_argument("--timeout", type=float, default=2.0)
    options = parser.parse_args(argv)
    rows: list[str] = []
    with tempfile.TemporaryDirectory() as temporary:
        directory = Path(temporary)
        authority = Authority.create(directory, "bench")
        certificate = authority.issue(directory, ["localhost", "127.0.0.1", "127.0.0.2"])
        ca = str(authority.path)
        with AzureFake(certificate, authority.path) as azure:

            def case(
                name: str,
                kind: str,
                behaviour: hostile.Behaviour,
                tls: bool,
                redirect: bool = False,
            ) -> None:
                host = "127.0.0.2" if kind == "cosmian-kms" else "127.0.0.1"
                elsewhere = hostile.HostileServer(
                    hostile.answer(200), context=certificate.context() if tls else None
                ).start()
                if redirect:
                    behaviour = hostile.redirect(f"{elsewhere.url}/collect?stolen=1")
                server = hostile.HostileServer(
                    behaviour,
                    context=certificate.context() if tls else None,
                    host=host,
                    tls_before_behaviour=name != "stalls the TLS handshake",
                ).start()
                try:
                    target = aim(kind, server, ca, azure)
                    code, elapsed, output = run(target, options.timeout, directory)
                    leaked = sum(
                        elsewhere.everything_received().count(c.encode()) * len(c)
                        for c in target.credentials
                    )
                    printed = any(c in output for c in target.credentials)
                finally:
                    server.stop()
                    elsewhere.stop()
                within = "yes" if elapsed <= options.timeout + 1 else "**no**"
                rows.append(
                    f"| {name} | {kind} | {code} | {elapsed:.2f} | {within} | {leaked}"
                    f" | {'**yes**' if printed else 'no'} |"
                )
                print(rows[-1], file=sys.stderr, flush=True)

            for kind in KINDS:
                tls = kind not in PLAIN
                for name, behaviour in FAULTS.items():
                    case(name, kind, behaviour, tls)
                case("stalls the TLS handshake", kind, hostile.stall_handshake, True)
                case("redirects elsewhere (307)", kind, hostile.stall, tls, redirect=True)
            case("redirects elsewhere (307)", "vault-approle", hostile.stall, False, redirect=True)
            for name, (kind, behaviour) in MALFORMED.items():
                case(name, kind, behaviour, kind not in PLAIN)
    print(f"\n--timeout {options.timeout:g}; time is from spawn to exit, start-up included.\n")
    print(
        "| case | backend | exit | time (s) | by deadline + 1 s | credential bytes at redirect target | credential printed |"
    )
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
