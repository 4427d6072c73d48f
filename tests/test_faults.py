"""Faults between the launcher and a real backend (OpenBao, moto, the Cosmian fake over http),
injected by the fault proxy: a fault that clears within the deadline costs a retry, one that
persists fails with 69 no later than the deadline plus one second, and permanent errors are
never retried."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from tests.conftest import DEADLINE_GRACE, Launch, served
from tests.servers.fault_proxy import FaultProxy, Faults
from tests.servers.moto_ssm import ACCESS_KEY, REGION, SECRET_KEY

DEADLINE = 2.0  # for faults that persist: long enough for several attempts, short to wait for
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


# Every fault on every backend in CI (-m "slow or not slow"); on vault alone in the default run.
# test_aws_ssm.py and test_cosmian_kms.py keep their own retry, deadline and refusal tests there.
@pytest.fixture(
    params=[
        "vault",
        pytest.param("aws-ssm", marks=pytest.mark.slow),
        pytest.param("cosmian-kms", marks=pytest.mark.slow),
    ]
)
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
def launch(launch_backend: Callable[..., Callable[..., Launch]]) -> Callable[..., Launch]:
    def run(target: Target, *, timeout: float = 10, config: str | None = None,
            env: dict[str, str] | None = None) -> Launch:
        start = launch_backend(target.backend, target.env)
        return start(config or target.config(), env, "--timeout", str(timeout), timeout=timeout + 30)

    return run


def served_all(result: Launch, target: Target) -> None:
    assert served(result)["secrets"] == target.values


# -- faults that clear before the deadline: the launch succeeds ---------------------------------


def test_added_latency_still_launches(target: Target, launch) -> None:
    target.proxy.reset(Faults(latency=0.3))
    served_all(launch(target), target)
    assert target.proxy.count() > 0


def test_reset_connections_are_retried(target: Target, launch) -> None:
    target.proxy.reset(Faults(reset_connections=3))
    served_all(launch(target), target)
    assert target.proxy.connections > 3


@pytest.mark.slow
def test_a_blackholed_connection_is_abandoned_and_retried(target: Target, launch) -> None:
    # One attempt may take at most 5 s: with a 12 s deadline the retry has room; without a
    # per-attempt timeout the blackhole would eat the whole deadline and the launch would fail.
    target.proxy.reset(Faults(blackhole_connections=1))
    served_all(launch(target, timeout=12), target)
    assert target.proxy.connections > 1


def test_refused_connections_are_retried_until_the_server_listens(
    target: Target, launch, startup_allowance
) -> None:
    # Refused for longer than a slow launcher start (three times the slowest measured), so its
    # first attempts meet a closed port whatever the machine's load.
    reopening = target.proxy.refuse_for(startup_allowance(target.backend) + 0.5)
    try:
        assert not target.proxy.reopened.is_set()  # the launch starts while nothing listens
        result = launch(target)
    finally:
        reopening.join()
    served_all(result, target)
    assert target.proxy.reopened.is_set()


def test_503_for_the_first_requests_is_retried(target: Target, launch) -> None:
    target.proxy.reset(Faults(status_requests=3, status=503))
    served_all(launch(target), target)
    assert target.proxy.count() > 3
    assert sum(seen.answered_by_proxy for seen in target.proxy.requests) == 3


def test_429_honours_retry_after(target: Target, launch) -> None:
    target.proxy.reset(Faults(status_requests=1, status=429, retry_after=1))
    result = launch(target)
    served_all(result, target)
    assert result.elapsed >= 1  # waited as told, not the jittered 0-100 ms


# -- faults that persist: 69, no later than the deadline plus one second -----------------------


@pytest.mark.parametrize(
    "faults",
    [
        Faults(blackhole_all=True),
        Faults(reset_connections=10**9),
        Faults(status_requests=10**9, status=503),
        Faults(status_requests=10**9, status=429, retry_after=0.5),
    ],
    ids=["blackhole", "reset", "503", "429"],
)
def test_a_persistent_fault_fails_with_69_by_the_deadline(
    target: Target, launch, ends_by_deadline, faults: Faults
) -> None:
    target.proxy.reset(faults)
    result = launch(target, timeout=DEADLINE)
    assert result.returncode == 69, result.stderr
    assert result.report is None
    ends_by_deadline(result, target.backend, DEADLINE)
    for key, reference in target.references.items():
        assert f"kms-launch: secrets.{key}: {reference}: " in result.stderr


def test_a_server_that_refuses_until_the_deadline_fails_with_69(
    target: Target, launch, ends_by_deadline, startup_allowance
) -> None:
    # Refused for longer than the whole run may last: the launch can only end with 69.
    target.proxy.refuse_for(DEADLINE + DEADLINE_GRACE + startup_allowance(target.backend))
    result = launch(target, timeout=DEADLINE)
    assert not target.proxy.reopened.is_set()
    assert result.returncode == 69, result.stderr
    ends_by_deadline(result, target.backend, DEADLINE)
    for key, reference in target.references.items():
        assert f"kms-launch: secrets.{key}: {reference}: " in result.stderr


# -- permanent errors are never retried ----------------------------------------------------------


def test_refused_credentials_are_not_retried(target: Target, launch) -> None:
    target.deny()
    result = launch(target, env=target.denied_env)
    assert result.returncode == 77, result.stderr
    assert result.report is None
    # One request per unit of work (a vault path, an SSM batch, a Cosmian object), never two.
    assert target.proxy.count() == {"vault": SECRETS, "aws-ssm": 3, "cosmian-kms": SECRETS}[target.backend]


def test_a_missing_secret_is_not_retried(target: Target, launch) -> None:
    result = launch(target, config=target.config({"gone": target.missing}))
    assert result.returncode == 65
    assert f"kms-launch: secrets.gone: {target.missing}: " in result.stderr
    assert target.proxy.count() == 1


# -- the backend dies mid-run ----------------------------------------------------------------


def test_a_backend_that_dies_between_requests_execs_nothing_and_reports_every_miss(
    target: Target, launch, ends_by_deadline, attempts_deadline
) -> None:
    """One request (a vault path, an SSM batch, a KMIP Get) is answered, then the backend dies."""
    target.proxy.reset(Faults(die_after=1))
    timeout = float(attempts_deadline(target.backend))  # the one answer surely comes in time
    result = launch(target, timeout=timeout)
    assert result.returncode == 69, result.stderr
    assert result.report is None
    ends_by_deadline(result, target.backend, timeout)
    lines = result.stderr.splitlines()
    reported = {line.split(": ")[1] for line in lines}
    assert reported <= {f"secrets.{key}" for key in target.references}
    # Every reference but those the one answered request resolved (SSM batches hold 10, 10, 5).
    expected = {"vault": {SECRETS - 1}, "aws-ssm": {SECRETS - 10, SECRETS - 5}, "cosmian-kms": {SECRETS - 1}}
    assert len(lines) in expected[target.backend]
    assert len(reported) == len(lines)
