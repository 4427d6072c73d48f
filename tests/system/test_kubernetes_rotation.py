"""deploy/kubernetes/restart-on-rotation/: the CronJob that restarts the KMS when a secret was
rotated, its least-privilege RBAC, and its two scripts run for real.

The schema of every manifest is checked by test_kubernetes_manifests.py (strict, offline). No
cluster runs here, so the scripts run on this host with their mount points mapped to directories:
the check script with the real kms-launch (the `file` backend on one directory, whose versions
stay put between runs, unlike a Secret volume's), the restart script with a strict stand-in for
kubectl that records the API calls and keeps the ConfigMap's data where the next pod's volume
would show it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.system import harness

DEPLOY = harness.ROOT / "deploy" / "kubernetes"
ROTATE = DEPLOY / "restart-on-rotation"
VARIANT = DEPLOY / "aws-irsa"
VENV_BIN = Path(sys.executable).parent


def load(path: Path) -> dict[str, Any]:
    (document,) = yaml.safe_load_all(path.read_text())
    return document


def cronjob() -> dict[str, Any]:
    return load(ROTATE / "cronjob.yaml")


def pod() -> dict[str, Any]:
    return cronjob()["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def check_container() -> dict[str, Any]:
    (only,) = pod()["initContainers"]
    return only


def restart_container() -> dict[str, Any]:
    (only,) = pod()["containers"]
    return only


def kms_container() -> dict[str, Any]:
    (only,) = load(VARIANT / "deployment.yaml")["spec"]["template"]["spec"]["containers"]
    return only


def test_rotation_is_a_cronjob_its_account_role_binding_and_record() -> None:
    kinds = sorted(load(path)["kind"] for path in ROTATE.glob("*.yaml"))

    assert kinds == ["ConfigMap", "CronJob", "Role", "RoleBinding", "ServiceAccount"]


def test_role_allows_only_restarting_the_kms_deployment_and_replacing_the_record() -> None:
    rules = load(ROTATE / "role.yaml")["rules"]
    deployment = load(VARIANT / "deployment.yaml")["metadata"]["name"]
    record = load(ROTATE / "configmap.yaml")["metadata"]["name"]

    assert rules == [
        {"apiGroups": ["apps"], "resources": ["deployments"], "resourceNames": [deployment],
         "verbs": ["get", "patch"]},
        {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [record],
         "verbs": ["get", "update"]},
    ]
    assert "deployment/cosmian-kms" in restart_container()["args"][0]


def test_role_is_bound_to_the_cronjobs_service_account_only() -> None:
    binding = load(ROTATE / "rolebinding.yaml")

    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": load(ROTATE / "role.yaml")["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount",
                                    "name": load(ROTATE / "serviceaccount.yaml")["metadata"]["name"]}]
    assert pod()["serviceAccountName"] == binding["subjects"][0]["name"]


def test_check_runs_in_the_kms_image_with_its_config_backend_and_identity() -> None:
    kms_mounts = {m["mountPath"]: m for m in kms_container()["volumeMounts"]}
    check_mounts = {m["mountPath"]: m for m in check_container()["volumeMounts"]}
    kms_volumes = {v["name"]: v for v in load(VARIANT / "deployment.yaml")["spec"]["template"]["spec"]["volumes"]}
    volumes = {v["name"]: v for v in pod()["volumes"]}
    config = "/etc/cosmian/kms.toml"
    kms_env = {e["name"]: e["value"] for e in kms_container()["env"]}
    env = {e["name"]: e["value"] for e in check_container()["env"]}

    assert check_container()["image"] == kms_container()["image"]
    assert check_mounts[config] == kms_mounts[config]
    assert volumes[check_mounts[config]["name"]] == kms_volumes[kms_mounts[config]["name"]]
    assert {name: env[name] for name in kms_env} == kms_env
    assert (load(ROTATE / "serviceaccount.yaml")["metadata"]["annotations"]
            == load(VARIANT / "serviceaccount.yaml")["metadata"]["annotations"])


def test_only_the_kubectl_container_gets_an_api_token() -> None:
    token = next(v["name"] for v in pod()["volumes"] if "projected" in v)
    sources = next(v for v in pod()["volumes"] if "projected" in v)["projected"]["sources"]

    assert load(ROTATE / "serviceaccount.yaml")["automountServiceAccountToken"] is False
    assert pod()["automountServiceAccountToken"] is False
    assert token not in {m["name"] for m in check_container()["volumeMounts"]}
    mount = next(m for m in restart_container()["volumeMounts"] if m["name"] == token)
    assert mount["mountPath"] == "/var/run/secrets/kubernetes.io/serviceaccount"
    assert {"serviceAccountToken", "configMap", "downwardAPI"} == {key for s in sources for key in s}


def test_pod_security_matches_the_kms_deployment() -> None:
    kms_pod = load(VARIANT / "deployment.yaml")["spec"]["template"]["spec"]["securityContext"]

    assert {k: v for k, v in kms_pod.items() if k != "fsGroup"} == pod()["securityContext"]
    for container in (check_container(), restart_container()):
        assert container["securityContext"] == kms_container()["securityContext"], container["name"]


def test_checks_never_overlap_and_a_failed_one_waits_for_the_next_schedule() -> None:
    spec = cronjob()["spec"]

    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["jobTemplate"]["spec"]["backoffLimit"] == 0
    assert pod()["restartPolicy"] == "Never"


# The scripts, for real -------------------------------------------------------------------------

KUBECTL = '''\
#!{python}
"""kubectl as the restart script uses it, and nothing else: calls are appended to CALLS, the
record ConfigMap's data lands in RECORD (what the next pod's volume shows)."""
import json, os, sys, yaml
args = sys.argv[1:]
with open(os.environ["KUBECTL_CALLS"], "a") as log:
    log.write(json.dumps(args) + "\\n")
record = os.environ["KUBECTL_RECORD"]
if args == ["rollout", "restart", "deployment/cosmian-kms"]:
    print("deployment.apps/cosmian-kms restarted")
elif args[:3] == ["create", "configmap", "kms-launch-record"] and args[4:] == ["--dry-run=client", "-o", "yaml"]:
    key, _, path = args[3].removeprefix("--from-file=").partition("=")
    data = {{key: open(path).read()}}
    print(yaml.safe_dump({{"apiVersion": "v1", "kind": "ConfigMap",
                          "metadata": {{"name": "kms-launch-record"}}, "data": data}}))
elif args == ["replace", "-f", "-"]:
    document = yaml.safe_load(sys.stdin)
    assert (document["kind"], document["metadata"]["name"]) == ("ConfigMap", "kms-launch-record")
    for key, value in document["data"].items():
        with open(os.path.join(record, key), "w") as file:
            file.write(value)
    print("configmap/kms-launch-record replaced")
else:
    sys.exit(f"kubectl stand-in: unexpected call {{args}}")
'''


class Cluster:
    """The CronJob's two containers run in turn on this host, as one Job would run them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.record = root / "record"  # the ConfigMap volume
        self.secrets = root / "secrets"
        self.config = root / "kms.toml"
        self.calls_file = root / "kubectl-calls"
        for directory in (self.record, self.secrets, root / "bin"):
            directory.mkdir()
        self.config.write_text('[db]\ndatabase_url = "postgresql://kms:secret://db-password@db/kms"\n')
        kubectl = root / "bin" / "kubectl"
        kubectl.write_text(KUBECTL.format(python=sys.executable))
        kubectl.chmod(0o755)
        self.calls_file.touch()
        self.runs = 0

    def script(self, container: dict[str, Any], work: Path) -> str:
        text = container["args"][0]
        for inside, here in (("/etc/cosmian/kms.toml", self.config), ("/record/", f"{self.record}/"),
                             ("/work/", f"{work}/")):
            assert inside in text or container["name"] == "restart", inside
            text = text.replace(inside, str(here))
        return text

    def run_job(self, settle: int = 0) -> tuple[subprocess.CompletedProcess[str], subprocess.CompletedProcess[str] | None]:
        """One Job: the check container, then the restart container if the check succeeded."""
        self.runs += 1
        work = self.root / f"work-{self.runs}"  # a new emptyDir per pod
        work.mkdir()
        env = {"PATH": f"{self.root / 'bin'}:{VENV_BIN}:/usr/bin:/bin", "LANG": "C.UTF-8",
               "KMS_SECRET_BACKEND": "file", "KMS_SECRETS_DIR": str(self.secrets),
               "KMS_ROTATE_SETTLE": str(settle), "HOME": str(work),
               "KUBECTL_CALLS": str(self.calls_file), "KUBECTL_RECORD": str(self.record)}
        check = subprocess.run(["/bin/sh", "-c", self.script(check_container(), work)], env=env,
                               capture_output=True, text=True, timeout=60)
        if check.returncode != 0:
            return check, None  # an init container failed: the Job fails, nothing else runs
        restart = subprocess.run(["/bin/sh", "-c", self.script(restart_container(), work)], env=env,
                                 capture_output=True, text=True, timeout=60)
        return check, restart

    def calls(self) -> list[list[str]]:
        """The API calls since the last look, in order. `create --dry-run=client` is left out:
        it only prints the ConfigMap for the `replace` it is piped into, which runs alongside."""
        lines = self.calls_file.read_text().splitlines()
        self.calls_file.write_text("")
        calls = [json.loads(line) for line in lines]
        return [call for call in calls if "--dry-run=client" not in call]

    def write_secret(self, value: str) -> None:
        new = self.secrets / ".db-password.new"
        new.write_text(value)
        os.replace(new, self.secrets / "db-password")

    def stored(self) -> dict[str, Any]:
        return json.loads((self.record / "launch.json").read_text())


RESTART = ["rollout", "restart", "deployment/cosmian-kms"]
STORE = ["replace", "-f", "-"]


@pytest.fixture
def cluster(tmp_path: Path) -> Cluster:
    made = Cluster(tmp_path)
    made.write_secret("first-password")
    return made


def test_first_run_stores_a_record_and_restarts_nothing(cluster: Cluster) -> None:
    check, restart = cluster.run_job()

    assert check.returncode == 0, check.stderr
    assert restart is not None, check.stderr
    assert restart.returncode == 0, restart.stderr
    assert cluster.calls() == [STORE]
    assert cluster.stored()["references"][0]["reference"] == "secret://db-password"


def test_unchanged_secret_makes_no_api_call(cluster: Cluster) -> None:
    cluster.run_job()
    cluster.calls()

    check, restart = cluster.run_job()

    assert restart is not None, check.stderr
    assert restart.returncode == 0, restart.stderr
    assert cluster.calls() == []


def test_rotated_secret_restarts_the_deployment_then_stores_the_new_record(cluster: Cluster) -> None:
    cluster.run_job()
    cluster.calls()
    before = cluster.stored()["references"][0]["version"]
    cluster.write_secret("rotated-password!")

    check, restart = cluster.run_job()

    assert restart is not None, check.stderr
    assert restart.returncode == 0, restart.stderr
    assert cluster.calls() == [RESTART, STORE]
    assert "changed: db.database_url: secret://db-password: version" in check.stderr
    assert cluster.stored()["references"][0]["version"] != before
    cluster.run_job()
    assert cluster.calls() == []  # and the stored record is current again


def test_rotation_younger_than_the_settle_time_waits_for_a_later_run(cluster: Cluster) -> None:
    cluster.run_job()
    cluster.calls()
    cluster.write_secret("just-rotated-password")

    check, restart = cluster.run_job(settle=60)

    assert restart is not None, check.stderr
    assert restart.returncode == 0, restart.stderr
    assert cluster.calls() == []
    assert "settling (younger than --settle 60s)" in check.stderr
    cluster.run_job(settle=0)
    assert cluster.calls() == [RESTART, STORE]


def test_failed_check_fails_the_job_and_makes_no_api_call(cluster: Cluster) -> None:
    cluster.run_job()
    cluster.calls()
    (cluster.secrets / "db-password").unlink()

    check, restart = cluster.run_job()

    assert check.returncode == 65, check.stderr
    assert restart is None
    assert cluster.calls() == []


def test_no_secret_value_reaches_the_record_or_the_output(cluster: Cluster) -> None:
    cluster.write_secret("rotation-value-that-must-not-leak")
    check, restart = cluster.run_job()
    cluster.write_secret("second-value-that-must-not-leak")
    check2, restart2 = cluster.run_job()

    everything = "".join([check.stdout, check.stderr, check2.stdout, check2.stderr,
                          *(r.stdout + r.stderr for r in (restart, restart2) if r),
                          (cluster.record / "launch.json").read_text()])
    assert "must-not-leak" not in everything
