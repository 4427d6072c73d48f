"""Faults between the launcher and a real backend (OpenBao, moto, the Cosmian fake over http),
injected by the fault proxy: a fault that clears within the deadline costs a retry, one that
persists fails with 69 no later than the deadline plus one second, and permanent errors are
never retried."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import Launch
from tests.servers.fault_proxy import FaultProxy, Faults
from tests.servers.moto_ssm import ACCESS_KEY, REGION, SECRET_KEY

GRACE = 1.0  # a failing launch must end no later than its deadline plus this
SECRETS = 25  # distinct secrets per backend: 25 vault reads, 3 SSM batches, 25 KMIP Gets


@dataclass
class Target:
    """One backend behind the fault proxy, with secrets in it and the launcher's environment."""

    backend: str
    proxy: FaultProxy
    env: dict[str, str]
    references: dict[str, str]  # config key -> reference
    values: dict[str, str]  # config key -> the value the server must get
    missing: str  # a well-formed reference to nothing
    denied_env: dict[str, str]  # an environment whose credentials the backend refuses
    deny: Callable[[], None] = lambda: None  # arrange for credentials to be refused

    def config(self, references: dict[str, str] | None = None) -> str:
        lines = [f'{key} = "{reference}"' for key, reference in (references or self.references).items()]
        return "[secrets]\n" + "\n".join(lines) + "\n"


@pytest.fixture(params=["vault", "aws-ssm", "cosmian-kms"])
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
    build = {"vault": _vault, "aws-ssm": _ssm, "cosmian-kms": _cosmian}[request.param]
    yield from build(request)


def _vault(request: pytest.FixtureRequest) -> Iterator[Target]:
    openbao = request.getfixturevalue("openbao")
    prefix = f"faults/{uuid.uuid4().hex[:8]}"
    values = {f"k{i}": f"vault-fault-value-{i}" for i in range(SECRETS)}
    for key, value in values.items():
        openbao.put(f"{prefix}/{key}", value=value)
    with FaultProxy.for_url(openbao.url) as proxy:
        env = {"VAULT_ADDR": proxy.url, "VAULT_TOKEN": openbao.token}
        yield Target(
            "vault", proxy, env,
            {key: f"secret://secret/{prefix}/{key}" for key in values}, values,
            missing=f"secret://secret/{prefix}/absent",
            denied_env={**env, "VAULT_TOKEN": "not-a-valid-token"},
        )


def _ssm(request: pytest.FixtureRequest) -> Iterator[Target]:
    moto = request.getfixturevalue("moto_ssm")
    prefix = f"faults/{uuid.uuid4().hex[:8]}"
    values = {f"k{i}": f"ssm-fault-value-{i}" for i in range(SECRETS)}
    for key, value in values.items():
        moto.put(f"/{prefix}/{key}", value)
    with FaultProxy.for_url(moto.url) as proxy:
        env = {"AWS_ENDPOINT_URL_SSM": proxy.url, "AWS_ACCESS_KEY_ID": ACCESS_KEY,
               "AWS_SECRET_ACCESS_KEY": SECRET_KEY}

        def deny() -> None:  # moto accepts any key: answer as SSM does for an unknown one
            body = {"__type": "UnrecognizedClientException", "message": "The security token is invalid."}
            proxy.answer(400, json.dumps(body).encode(), {"Content-Type": "application/x-amz-json-1.1"})

        yield Target(
            "aws-ssm", proxy, env,
            {key: f"secret://{REGION}/{prefix}/{key}" for key in values}, values,
            missing=f"secret://{REGION}/{prefix}/absent", denied_env=env, deny=deny,
        )


def _cosmian(request: pytest.FixtureRequest) -> Iterator[Target]:
    fake = request.getfixturevalue("cosmian_plain_fake")  # plain http on 127.0.0.1: proxiable
    fake.token = "cosmian-right-token"
    values = {f"k{i}": f"cosmian-fault-value-{i}" for i in range(SECRETS)}
    uids = {key: fake.put_secret_data(value.encode()) for key, value in values.items()}
    with FaultProxy("127.0.0.1", fake.port) as proxy:
        env = {"COSMIAN_KMS_SECRET_TOKEN": fake.token}
        yield Target(
            "cosmian-kms", proxy, env,
            {key: f"secret://127.0.0.1:{proxy.port}/{uid}" for key, uid in uids.items()}, values,
            missing=f"secret://127.0.0.1:{proxy.port}/{uuid.uuid4()}",
            denied_env={"COSMIAN_KMS_SECRET_TOKEN": "cosmian-wrong-token"},
        )


@pytest.fixture
def launch(run_launcher: Callable[..., Launch], write_config: Callable[[str], Path]) -> Callable[..., tuple[Launch, float]]:
    def run(target: Target, *, timeout: float = 10, config: str | None = None,
            env: dict[str, str] | None = None) -> tuple[Launch, float]:
        path = write_config(config or target.config())
        started = time.monotonic()
        result = run_launcher("--backend", target.backend, "--timeout", str(timeout), "-c", str(path),
                              env=env or target.env, timeout=timeout + 30)
        return result, time.monotonic() - started

    return run


def served(result: Launch, target: Target) -> None:
    assert result.returncode == 0, result.stderr
    assert result.report is not None
    assert result.report["parsed"]["secrets"] == target.values


# -- faults that clear before the deadline: the launch succeeds ---------------------------------


def test_added_latency_still_launches(target: Target, launch) -> None:
    target.proxy.reset(Faults(latency=0.3))
    result, _ = launch(target)
    served(result, target)


def test_reset_connections_are_retried(target: Target, launch) -> None:
    target.proxy.reset(Faults(reset_connections=3))
    result, _ = launch(target)
    served(result, target)
    assert target.proxy.connections > 3


def test_a_blackholed_connection_is_abandoned_and_retried(target: Target, launch) -> None:
    # One attempt may take at most 5 s: with a 12 s deadline the retry has room; without a
    # per-attempt timeout the blackhole would eat the whole deadline.
    target.proxy.reset(Faults(blackhole_connections=1))
    result, elapsed = launch(target, timeout=12)
    served(result, target)
    assert elapsed < 12


def test_refused_connections_are_retried_until_the_server_listens(target: Target, launch) -> None:
    refusing = threading.Thread(target=target.proxy.refuse_for, args=(1.5,))
    refusing.start()
    time.sleep(0.1)  # the listener is closed now
    try:
        result, elapsed = launch(target)
    finally:
        refusing.join()
    served(result, target)
    assert elapsed >= 1.3  # it waited for the server rather than succeeding by luck


def test_503_for_the_first_requests_is_retried(target: Target, launch) -> None:
    target.proxy.reset(Faults(status_requests=3, status=503))
    result, _ = launch(target)
    served(result, target)
    assert target.proxy.count() > 3


def test_429_honours_retry_after(target: Target, launch) -> None:
    target.proxy.reset(Faults(status_requests=1, status=429, retry_after=2))
    result, elapsed = launch(target)
    served(result, target)
    assert elapsed >= 2  # waited as told, not the jittered 0-100 ms


# -- faults that persist: 69, no later than the deadline plus one second -----------------------


@pytest.mark.parametrize(
    "faults",
    [
        Faults(blackhole_all=True),
        Faults(reset_connections=10**9),
        Faults(status_requests=10**9, status=503),
        Faults(status_requests=10**9, status=429, retry_after=1),
    ],
    ids=["blackhole", "reset", "503", "429"],
)
def test_a_persistent_fault_fails_with_69_by_the_deadline(target: Target, launch, faults: Faults) -> None:
    target.proxy.reset(faults)
    result, elapsed = launch(target, timeout=3)
    assert result.returncode == 69, result.stderr
    assert result.report is None
    assert elapsed < 3 + GRACE
    for key, reference in target.references.items():
        assert f"kms-launch: secrets.{key}: {reference}: " in result.stderr


def test_a_server_that_refuses_until_the_deadline_fails_with_69(target: Target, launch) -> None:
    refusing = threading.Thread(target=target.proxy.refuse_for, args=(4.5,))
    refusing.start()
    time.sleep(0.1)
    try:
        result, elapsed = launch(target, timeout=3)
    finally:
        refusing.join()
    assert result.returncode == 69
    assert elapsed < 3 + GRACE


# -- permanent errors are never retried ----------------------------------------------------------


def test_refused_credentials_are_not_retried(target: Target, launch) -> None:
    target.deny()
    result, _ = launch(target, env=target.denied_env)
    assert result.returncode == 77, result.stderr
    assert result.report is None
    # One request per unit of work (a vault path, an SSM batch, a Cosmian object), never two.
    assert target.proxy.count() == {"vault": SECRETS, "aws-ssm": 3, "cosmian-kms": SECRETS}[target.backend]


def test_a_missing_secret_is_not_retried(target: Target, launch) -> None:
    result, _ = launch(target, config=target.config({"gone": target.missing}))
    assert result.returncode == 65
    assert f"kms-launch: secrets.gone: {target.missing}: " in result.stderr
    assert target.proxy.count() == 1


# -- the backend dies mid-run ----------------------------------------------------------------


def test_a_backend_that_dies_between_requests_execs_nothing_and_reports_every_miss(
    target: Target, launch
) -> None:
    """One request (a vault path, an SSM batch, a KMIP Get) is answered, then the backend dies."""
    target.proxy.reset(Faults(die_after=1))
    result, elapsed = launch(target, timeout=3)
    assert result.returncode == 69, result.stderr
    assert result.report is None
    assert elapsed < 3 + GRACE
    lines = result.stderr.splitlines()
    reported = {line.split(": ")[1] for line in lines}
    assert reported <= {f"secrets.{key}" for key in target.references}
    # Every reference but those the one answered request resolved (SSM batches hold 10, 10, 5).
    expected = {"vault": {SECRETS - 1}, "aws-ssm": {SECRETS - 10, SECRETS - 5}, "cosmian-kms": {SECRETS - 1}}
    assert len(lines) in expected[target.backend]
    assert len(reported) == len(lines)
