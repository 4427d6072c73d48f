"""deploy/kubernetes/: the manifests the README describes, validated against the Kubernetes API
schema offline (kubernetes-validate, strict: unknown fields are errors) and checked for every field
the README promises. No cluster runs here; the secret-volume variant's config is resolved for real
from a directory laid out like a Secret volume."""

from __future__ import annotations

import copy
import os
import re
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from launcher import config as kms_config
from tests.system import harness

kubernetes_validate = pytest.importorskip(
    "kubernetes_validate", reason="kubernetes-validate is not installed (pip install -e '.[test]')"
)

DEPLOY = harness.ROOT / "deploy" / "kubernetes"
VARIANTS = {"secret-volume": "file", "aws-irsa": "aws-ssm", "azure-workload-identity": "azure-kv"}
# The oldest Kubernetes still commonly in service and the newest the validator knows.
KUBERNETES_VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]
CONFIG_PATH = "/etc/cosmian/kms.toml"


def manifests() -> list[Path]:
    return sorted(DEPLOY.rglob("*.yaml"))


def load(path: Path) -> dict[str, Any]:
    (document,) = yaml.safe_load_all(path.read_text())
    return document


def deployment(variant: str) -> dict[str, Any]:
    return load(DEPLOY / variant / "deployment.yaml")


def container(variant: str) -> dict[str, Any]:
    (only,) = deployment(variant)["spec"]["template"]["spec"]["containers"]
    return only


def env(variant: str) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container(variant)["env"]}


def test_every_variant_has_a_configmap_a_serviceaccount_and_a_deployment() -> None:
    for variant in VARIANTS:
        kinds = sorted(load(path)["kind"] for path in (DEPLOY / variant).glob("*.yaml"))
        assert kinds == ["ConfigMap", "Deployment", "ServiceAccount"], variant
    assert load(DEPLOY / "service.yaml")["kind"] == "Service"


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("path", manifests(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_manifest_validates_strictly_against_the_kubernetes_schema(path: Path, version: str) -> None:
    for document in yaml.safe_load_all(path.read_text()):
        kubernetes_validate.validate(document, version, strict=True)


def test_the_validator_rejects_a_misspelled_field_so_a_pass_means_something() -> None:
    broken = copy.deepcopy(deployment("secret-volume"))
    broken["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFileSystem"] = True

    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[0], strict=True)


@pytest.mark.parametrize("variant", VARIANTS)
def test_configmap_is_mounted_where_the_image_reads_its_config(variant: str) -> None:
    configmap = load(DEPLOY / variant / "configmap.yaml")
    volumes = {v["name"]: v for v in deployment(variant)["spec"]["template"]["spec"]["volumes"]}
    mounts = {m["mountPath"]: m for m in container(variant)["volumeMounts"]}

    mount = mounts[CONFIG_PATH]
    assert volumes[mount["name"]]["configMap"]["name"] == configmap["metadata"]["name"]
    assert mount["subPath"] in configmap["data"]
    assert mount["readOnly"] is True


@pytest.mark.parametrize("variant", VARIANTS)
def test_configmap_holds_references_only(variant: str) -> None:
    text = load(DEPLOY / variant / "configmap.yaml")["data"]["kms.toml"]

    document = kms_config.parse(text)
    references = kms_config.find_references(document)

    assert references, "a config without references needs no kms-launch"
    assert tomllib.loads(text)["db"]["database_url"].startswith("postgresql://kms:secret")


@pytest.mark.parametrize("variant", VARIANTS)
def test_image_runs_its_own_entrypoint_with_the_variants_backend(variant: str) -> None:
    assert "command" not in container(variant)
    assert "args" not in container(variant)
    assert env(variant)["KMS_SECRET_BACKEND"] == VARIANTS[variant]


@pytest.mark.parametrize("variant", VARIANTS)
def test_pod_security_is_what_the_readme_promises(variant: str) -> None:
    pod = deployment(variant)["spec"]["template"]["spec"]
    security = container(variant)["securityContext"]
    uid, gid = re.search(r"^USER (\d+):(\d+)$", (harness.ROOT / "container" / "Containerfile").read_text(), re.M).groups()

    assert pod["securityContext"]["runAsNonRoot"] is True
    assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == (int(uid), int(gid))
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert security == {"readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]}}
    # With a read-only root, the KMS's working directory must be a volume.
    assert "/var/lib/cosmian-kms" in {m["mountPath"] for m in container(variant)["volumeMounts"]}


@pytest.mark.parametrize("variant", VARIANTS)
def test_pod_runs_as_its_service_account_without_the_api_token(variant: str) -> None:
    account = load(DEPLOY / variant / "serviceaccount.yaml")
    pod = deployment(variant)["spec"]["template"]["spec"]

    assert pod["serviceAccountName"] == account["metadata"]["name"]
    assert pod["automountServiceAccountToken"] is False
    assert account["automountServiceAccountToken"] is False


def test_irsa_service_account_carries_the_role_annotation() -> None:
    annotations = load(DEPLOY / "aws-irsa" / "serviceaccount.yaml")["metadata"]["annotations"]

    assert re.fullmatch(r"arn:aws:iam::\d{12}:role/[\w+=,.@-]+", annotations["eks.amazonaws.com/role-arn"])
    assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} & set(env("aws-irsa"))


def test_aks_workload_identity_labels_the_pod_and_annotates_the_service_account() -> None:
    annotations = load(DEPLOY / "azure-workload-identity" / "serviceaccount.yaml")["metadata"]["annotations"]
    labels = deployment("azure-workload-identity")["spec"]["template"]["metadata"]["labels"]

    assert labels["azure.workload.identity/use"] == "true"  # a string: labels are strings
    assert re.fullmatch(r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}", annotations["azure.workload.identity/client-id"])
    assert "AZURE_CLIENT_SECRET" not in env("azure-workload-identity")


def test_secret_volume_is_mounted_read_only_where_kms_secrets_dir_points() -> None:
    pod = deployment("secret-volume")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mount = next(m for m in container("secret-volume")["volumeMounts"]
                 if "secret" in volumes[m["name"]])

    assert mount["mountPath"] == env("secret-volume")["KMS_SECRETS_DIR"]
    assert mount["readOnly"] is True
    assert volumes[mount["name"]]["secret"]["defaultMode"] == 0o400
    # 0400 files are owned by root: fsGroup makes the kubelet add group read for the KMS's user.
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsGroup"]


def test_variants_differ_only_in_backend_credentials() -> None:
    def without_credentials(variant: str) -> dict[str, Any]:
        copy_ = copy.deepcopy(deployment(variant))
        spec = copy_["spec"]["template"]["spec"]
        spec["volumes"] = [v for v in spec["volumes"] if "secret" not in v]
        kept = {v["name"] for v in spec["volumes"]}
        spec["containers"][0]["volumeMounts"] = [m for m in spec["containers"][0]["volumeMounts"]
                                                 if m["name"] in kept]
        del spec["containers"][0]["env"]
        copy_["spec"]["template"]["metadata"]["labels"].pop("azure.workload.identity/use", None)
        return copy_

    reference = without_credentials("secret-volume")
    for variant in VARIANTS:
        assert without_credentials(variant) == reference, variant


def readme_yaml_blocks() -> list[Any]:
    section = (harness.ROOT / "README.md").read_text().split("\n### Kubernetes\n", 1)[1].split("\n### ", 1)[0]
    return [yaml.safe_load(block) for block in re.findall(r"```yaml\n(.*?)```", section, re.S)]


def test_readme_secret_volume_snippet_is_part_of_the_shipped_deployment() -> None:
    (snippet,) = [block for block in readme_yaml_blocks() if "volumes" in block]
    pod = deployment("secret-volume")["spec"]["template"]["spec"]

    for item in snippet["env"]:
        assert item in container("secret-volume")["env"]
    for item in snippet["volumeMounts"]:
        assert item in container("secret-volume")["volumeMounts"]
    for item in snippet["volumes"]:
        assert item in pod["volumes"]


def test_secret_volume_variant_resolves_from_a_directory_laid_out_like_a_secret_volume(
    tmp_path: Path, run_launcher: Callable[..., Any]
) -> None:
    # What the kubelet writes: the files in a timestamped directory, ..data a symlink to it, and
    # each key a symlink through ..data.
    volume = tmp_path / "kms-secrets"
    stamp = volume / "..2026_11_30_00_00_00.000000001"
    stamp.mkdir(parents=True)
    (stamp / "db-password").write_text("p@ss/word from a Secret\n")
    os.symlink(stamp.name, volume / "..data")
    os.symlink("..data/db-password", volume / "db-password")
    config = tmp_path / "kms.toml"
    config.write_text(load(DEPLOY / "secret-volume" / "configmap.yaml")["data"]["kms.toml"])
    variables = {**env("secret-volume"), "KMS_SECRETS_DIR": str(volume)}

    launch = run_launcher("-c", str(config), env=variables)

    assert launch.returncode == 0, launch.stderr
    assert launch.report["parsed"]["db"]["database_url"] == (
        "postgresql://kms:p%40ss%2Fword%20from%20a%20Secret@postgres:5432/kms"
    )
