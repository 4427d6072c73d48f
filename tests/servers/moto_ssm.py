"""moto's server on loopback as the SSM Parameter Store, and the aws-ssm contract store."""

from __future__ import annotations

import itertools
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3
import requests

from tests.servers.process import ServerProcess, wait_until_ready

ACCESS_KEY = "AKIDMOTOTESTING"
SECRET_KEY = "moto-testing-secret-key"
REGION = "eu-west-1"
_STARTUP = 15.0
_names = itertools.count()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class MotoServer(ServerProcess):
    """One `moto_server` process; any credentials are accepted, state lives in memory."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        executable = Path(sys.executable).parent / "moto_server"  # the venv's, not PATH's
        for _ in range(3):
            self.port = free_port()
            log = (self.workdir / "moto.log").open("ab")
            env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
            self.process = subprocess.Popen(
                [str(executable), "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
            log.close()
            if self._wait_ready():
                # The first SSM call loads moto's SSM backend (1-2 s): pay it here, once.
                self.client().describe_parameters()
                return
            self.stop()
        raise RuntimeError(f"moto_server did not start; see {self.workdir / 'moto.log'}")

    def _wait_ready(self) -> bool:
        return wait_until_ready(
            self.process, lambda: requests.get(f"{self.url}/moto-api/", timeout=1).ok, _STARTUP
        )

    def reset(self) -> None:
        """Forget every parameter of every region."""
        requests.post(f"{self.url}/moto-api/reset", timeout=5).raise_for_status()

    def client(self, region: str = REGION, service: str = "ssm") -> Any:
        """A client of the server (test set-up, never the code under test)."""
        return boto3.client(
            service,
            region_name=region,
            endpoint_url=self.url,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        )

    def put(self, name: str, value: str, region: str = REGION) -> None:
        """A SecureString (advanced tier: values up to 8 KiB), overwriting any earlier value."""
        self.client(region).put_parameter(
            Name=name, Value=value, Type="SecureString", Tier="Advanced", Overwrite=True
        )


class SsmStore:
    """The backend contract test's store: SecureString parameters in the shared moto server."""

    backend = "aws-ssm"
    endpoint_variable = "AWS_ENDPOINT_URL_SSM"

    def __init__(self, server: MotoServer) -> None:
        self.server = server

    def put(self, value: str) -> str:
        name = f"contract/{next(_names)}"
        self.store(name, value)
        return f"secret://{REGION}/{name}"

    def store(self, name: str, value: str) -> None:
        self.server.put(f"/{name}", value)

    def missing(self) -> str:
        return f"secret://{REGION}/contract/does-not-exist"

    def environ(self) -> dict[str, str]:
        # botocore reads the endpoint from the process environment only: an in-process backend
        # needs the aws_ssm_store fixture to set it there too; a launcher subprocess reads it here.
        return {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            self.endpoint_variable: self.server.url,
        }


# -- Secrets Manager (the same moto server) ------------------------------------------------------


class SecretsManagerStore(SsmStore):
    """The backend contract test's store: SecretString secrets in the shared moto server."""

    backend = "aws-sm"
    endpoint_variable = "AWS_ENDPOINT_URL_SECRETS_MANAGER"

    def store(self, name: str, value: str) -> None:
        self.server.client(service="secretsmanager").create_secret(Name=name, SecretString=value)
