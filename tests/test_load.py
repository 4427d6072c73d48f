"""Load: 50 launches at once against one OpenBao and one moto server, 20 references each; every
server gets exactly its own values, within the deadline, with the expected number of requests.
(A launch that missed the deadline would have exited 69: the deadline needs no clock here.)"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import STANDIN
from tests.servers.fault_proxy import FaultProxy
from tests.servers.moto_ssm import ACCESS_KEY, REGION, SECRET_KEY

LAUNCHES = 50  # half on vault, half on aws-ssm
REFERENCES = 20
# What is tested is isolation and request economy under concurrency, not speed: fifty
# interpreters importing boto3 or hvac at once on a busy two-core machine can take longer than
# the default 30 s deadline (which starts before the SDK import), so the deadline is generous.
DEADLINE = 120.0

pytestmark = [pytest.mark.slow, pytest.mark.timeout(DEADLINE + 180)]


def test_fifty_concurrent_launches_each_get_exactly_their_own_values(
    tmp_path: Path, openbao, moto_ssm, clean_env: dict[str, str]
) -> None:
    run = uuid.uuid4().hex[:8]
    expected: dict[int, dict[str, str]] = {}
    configs: dict[int, tuple[str, Path, dict[str, str]]] = {}
    vault_proxy = FaultProxy.for_url(openbao.url)
    ssm_proxy = FaultProxy.for_url(moto_ssm.url)
    try:
        for launch in range(LAUNCHES):
            values = {f"k{j}": f"launch-{launch}-value-{j}-{run}" for j in range(REFERENCES)}
            expected[launch] = values
            if launch % 2 == 0:  # vault: 20 fields over 5 paths
                paths: dict[str, dict[str, str]] = {}
                refs = {}
                for j, (key, value) in enumerate(values.items()):
                    path = f"load/{run}/{launch}/p{j % 5}"
                    paths.setdefault(path, {})[key] = value
                    refs[key] = f"secret://secret/{path}#{key}"
                for path, fields in paths.items():
                    openbao.put(path, **fields)
                env = {"VAULT_ADDR": vault_proxy.url, "VAULT_TOKEN": openbao.token}
                backend = "vault"
            else:
                refs = {}
                for key, value in values.items():
                    moto_ssm.put(f"/load/{run}/{launch}/{key}", value)
                    refs[key] = f"secret://{REGION}/load/{run}/{launch}/{key}"
                env = {"AWS_ENDPOINT_URL_SSM": ssm_proxy.url, "AWS_ACCESS_KEY_ID": ACCESS_KEY,
                       "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
                backend = "aws-ssm"
            config = tmp_path / f"kms-{launch}.toml"
            config.write_text("[secrets]\n" + "".join(f'{k} = "{r}"\n' for k, r in refs.items()))
            configs[launch] = (backend, config, env)

        started = time.monotonic()
        processes = {}
        for launch, (backend, config, env) in configs.items():
            report = tmp_path / f"report-{launch}.json"
            processes[launch] = subprocess.Popen(
                [sys.executable, "-m", "launcher", "--backend", backend, "--timeout", str(DEADLINE),
                 "-c", str(config), "--", sys.executable, str(STANDIN)],
                env={**clean_env, **env, "STANDIN_REPORT": str(report)},
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )
        outcomes = {launch: process.communicate(timeout=DEADLINE + 60) for launch, process in processes.items()}
        wall = time.monotonic() - started

        for launch, process in processes.items():
            assert process.returncode == 0, (launch, outcomes[launch][1])
            report = json.loads((tmp_path / f"report-{launch}.json").read_text())
            assert report["pid"] == process.pid
            assert report["parsed"] == {"secrets": expected[launch]}
        # Request economy counts distinct requests: on an overloaded machine an attempt cut off
        # by its 5 s wall-clock window is rightly sent again, and the repeat asks the same thing.
        vault_seen = [r for r in vault_proxy.seen() if r.path.startswith("/v1/secret/data/")]
        ssm_seen = [r for r in ssm_proxy.seen() if r.target == "AmazonSSM.GetParameters"]
        vault_reads = {r.path for r in vault_seen}
        ssm_calls = {r.body for r in ssm_seen}
        repeats = len(vault_seen) + len(ssm_seen) - len(vault_reads) - len(ssm_calls)
        print(f"\n{LAUNCHES} launches x {REFERENCES} references: {wall:.1f}s wall;"
              f" vault reads {len(vault_reads)}, SSM GetParameters {len(ssm_calls)}, repeats {repeats}")
        assert len(vault_reads) == (LAUNCHES // 2) * 5  # one read per path
        assert len(ssm_calls) == (LAUNCHES // 2) * 2  # ten names per call
    finally:
        vault_proxy.close()
        ssm_proxy.close()
