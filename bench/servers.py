"""The secret stores the benchmark reads from, reusing the test suite's servers: a real OpenBao and
a real moto server behind the fault proxy (which adds latency and counts requests), and the
Azure AD / Key Vault and Cosmian KMS fakes over HTTPS (which add latency and count themselves)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from tests.servers.azure_fake import AzureFake
from tests.servers.cosmian_fake import CosmianFake
from tests.servers.fault_proxy import FaultProxy, Faults
from tests.servers.moto_ssm import ACCESS_KEY, SECRET_KEY, MotoServer
from tests.servers.openbao import OpenBao
from tests.servers.tls import Authority

BACKENDS = ("vault", "aws-ssm", "aws-sm", "azure-kv", "cosmian-kms")
COSMIAN_TOKEN = "bench-token"  # noqa: S105 - the fake KMS's bearer token, for this benchmark only


@dataclass
class Stack:
    """Every server, started together and stopped together (also on error)."""

    workdir: Path

    def __post_init__(self) -> None:
        self._stack = contextlib.ExitStack()
        self.latency = 0.0

    def __enter__(self) -> Stack:
        try:
            self._start()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stack.close()

    def _start(self) -> None:
        stack = self._stack
        for name in ("openbao", "moto", "ca"):
            (self.workdir / name).mkdir(parents=True, exist_ok=True)
        self.openbao = stack.enter_context(OpenBao(self.workdir / "openbao"))
        self.moto = stack.enter_context(MotoServer(self.workdir / "moto"))
        self.vault_proxy = FaultProxy("127.0.0.1", self.openbao.port)
        stack.callback(self.vault_proxy.close)
        self.ssm_proxy = FaultProxy("127.0.0.1", self.moto.port)
        stack.callback(self.ssm_proxy.close)
        authority = Authority.create(self.workdir / "ca", "bench")
        certificate = authority.issue(self.workdir / "ca", ["localhost", "127.0.0.1", "127.0.0.2"])
        self.ca_path = authority.path
        self.azure = stack.enter_context(AzureFake(certificate, authority.path))
        # 127.0.0.2: not one of the names the launcher talks to in clear, so this is HTTPS, as
        # a remote KMS would be.
        self.cosmian = stack.enter_context(
            CosmianFake("127.0.0.2", certificate, token=COSMIAN_TOKEN, ca_path=authority.path)
        )

    # -- latency and request counts

    def set_latency(self, seconds: float) -> None:
        """Add `seconds` to every request of every backend; counters are cleared."""
        self.latency = seconds
        for fake in (self.azure.authority, self.azure.vault, self.cosmian):
            fake.latency = dict.fromkeys(("discovery", "token", "secret", "kmip"), seconds)
        self.reset()

    def reset(self) -> None:
        """Clear every request counter."""
        for proxy in (self.vault_proxy, self.ssm_proxy):
            proxy.reset(Faults(latency=self.latency))
        for fake in (self.azure.authority, self.azure.vault, self.cosmian):
            fake.counts.clear()

    def requests(self, backend: str) -> dict[str, int]:
        """What `backend`'s servers received since the last reset, by kind of request."""
        if backend == "file":
            return {}
        if backend == "vault":
            return {
                "reads": self.vault_proxy.forwarded("/data/"),
                "other": self.vault_proxy.forwarded() - self.vault_proxy.forwarded("/data/"),
            }
        if backend in ("aws-ssm", "aws-sm"):  # the same moto server and proxy
            return {"calls": self.ssm_proxy.forwarded()}
        if backend == "azure-kv":
            counts = self.azure.authority.counts + self.azure.vault.counts
            return {
                "token": counts["token"],
                "discovery": counts["discovery"],
                "secrets": counts["secret"],
            }
        if backend == "cosmian-kms":
            return {"gets": self.cosmian.counts["kmip"]}
        raise ValueError(backend)

    # -- what a client needs

    def environ(self, backend: str) -> dict[str, str]:
        """The deployment environment of `backend`: endpoint (through the latency proxy for the
        plain-HTTP servers), credentials, and the CA that signed the fakes' certificates."""
        if backend == "vault":
            return {"VAULT_ADDR": self.vault_proxy.url, "VAULT_TOKEN": self.openbao.token}
        if backend == "aws-ssm":
            return {
                "AWS_ENDPOINT_URL_SSM": self.ssm_proxy.url,
                "AWS_ACCESS_KEY_ID": ACCESS_KEY,
                "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
                "AWS_DEFAULT_REGION": "eu-west-1",
            }
        if backend == "aws-sm":
            return {
                "AWS_ENDPOINT_URL_SECRETS_MANAGER": self.ssm_proxy.url,
                "AWS_ACCESS_KEY_ID": ACCESS_KEY,
                "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            }
        if backend == "azure-kv":
            return self.azure.environ()
        if backend == "cosmian-kms":
            return {
                "COSMIAN_KMS_CA_CERT": str(self.ca_path),
                "COSMIAN_KMS_SECRET_TOKEN": COSMIAN_TOKEN,
                "REQUESTS_CA_BUNDLE": str(self.ca_path),
            }
        raise ValueError(backend)
