"""?version=<pin>: one pin syntax for every backend that versions secrets, and the version each
reference resolved to, against OpenBao, moto and the Azure and Cosmian fakes."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest

from launcher import backends, refs, resolve
from launcher.deadline import Deadline
from launcher.errors import BadReference, Failures, SecretNotFound
from tests.conftest import Launch, served
from tests.servers.azure_fake import DEFAULT_VAULT, AzureFake
from tests.servers.cosmian_fake import CosmianFake
from tests.servers.moto_ssm import ACCESS_KEY, REGION, SECRET_KEY, MotoServer
from tests.servers.openbao import OpenBao

Launcher = Callable[..., Launch]


def open_backend(name: str, environ: dict[str, str]) -> backends.Backend:
    return backends.load(name)(environ, Deadline(20))


def resolved(name: str, environ: dict[str, str], text: str) -> backends.Secret:
    ref = refs.parse(text)
    return resolve.resolve(open_backend(name, environ), [ref])[ref]


def refused(name: str, environ: dict[str, str], text: str) -> BadReference:
    """The BadReference a backend raises for `text` before any request."""
    with pytest.raises(Failures) as caught:
        resolve.resolve(open_backend(name, environ), [refs.parse(text)])
    [error] = caught.value.errors
    assert isinstance(error, BadReference), error
    assert error.exit_code == 65
    return error


def check_lines(result: Launch) -> dict[str, list[str]]:
    """--check output by key: [reference, status, length, version...]."""
    assert result.returncode == 0, result.stderr
    return {line.split("\t")[0]: line.split("\t")[1:] for line in result.stdout.splitlines()}


# -- the grammar --------------------------------------------------------------------------------


def test_a_pin_is_decoded_into_ref_version() -> None:
    ref = refs.parse("secret://secret/kms/db?version=3#password")
    assert (ref.host, ref.path, ref.version, ref.field) == (
        "secret",
        ("kms", "db"),
        "3",
        "password",
    )


def test_a_percent_encoded_pin_is_decoded() -> None:
    assert refs.parse("secret://eu-west-1/kms/db?version=rel%2D1").version == "rel-1"


def test_an_empty_pin_is_a_bad_reference() -> None:
    for text in ("secret://secret/kms/db?version=", "secret://secret/kms/db?version=#password"):
        with pytest.raises(BadReference, match="empty version"):
            list(refs.find(text))


def test_an_empty_pin_inside_a_url_is_a_bad_reference_too() -> None:
    with pytest.raises(BadReference, match="empty version"):
        list(refs.find("postgresql://kms:secret://secret/kms/db?version=@db.internal/kms"))


def test_a_pin_after_the_field_is_a_bad_reference() -> None:
    with pytest.raises(BadReference, match="before any '#field'"):
        list(refs.find("secret://secret/kms/db#password?version=3"))


def test_a_second_pin_is_a_bad_reference() -> None:
    with pytest.raises(BadReference, match="at most"):
        list(refs.find("secret://secret/kms/db?version=3?version=4"))


def test_any_other_query_ends_the_reference_and_stays_text() -> None:
    text = "https://example.com/cb?token=secret://secret/kms/db?sslmode=require"
    [span] = refs.find(text)
    assert span.ref.text == "secret://secret/kms/db"
    assert text[span.end :] == "?sslmode=require"


def test_an_unpinned_reference_has_no_version() -> None:
    assert refs.parse("secret://secret/kms/db#password").version is None


# -- vault: KV-v2 version N ---------------------------------------------------------------------


@pytest.fixture
def vault_env(openbao: OpenBao) -> dict[str, str]:
    return {"VAULT_ADDR": openbao.url, "VAULT_TOKEN": openbao.token}


@pytest.fixture
def kv(openbao: OpenBao, request: pytest.FixtureRequest) -> str:
    """A path of this test's own holding three versions: password v1, v2, v3."""
    path = f"pins/{request.node.name}"
    for number in (1, 2, 3):
        openbao.put(path, password=f"pw-v{number}")
    return path


def test_vault_pin_reads_that_version(vault_env: dict[str, str], kv: str) -> None:
    secret = resolved("vault", vault_env, f"secret://secret/{kv}?version=1#password")
    assert (secret.value, secret.version) == (b"pw-v1", "1")


def test_vault_unpinned_reads_the_latest_and_says_which(vault_env: dict[str, str], kv: str) -> None:
    secret = resolved("vault", vault_env, f"secret://secret/{kv}#password")
    assert (secret.value, secret.version) == (b"pw-v3", "3")


def test_vault_created_is_the_versions_creation_time(
    openbao: OpenBao, vault_env: dict[str, str], kv: str
) -> None:
    metadata = openbao.client().secrets.kv.v2.read_secret_version(
        path=kv, version=2, mount_point="secret", raise_on_deleted_version=True
    )
    stamp = metadata["data"]["metadata"]["created_time"]  # RFC 3339 with nanoseconds
    secret = resolved("vault", vault_env, f"secret://secret/{kv}?version=2#password")
    whole, _, fraction = stamp.removesuffix("Z").partition(".")  # Go trims trailing zeros
    expected = datetime.fromisoformat(whole + "+00:00").timestamp() + float(f"0.{fraction or 0}")
    assert secret.created is not None
    assert abs(secret.created - expected) < 1e-5
    assert abs(secret.created - time.time()) < 120


def test_vault_pinned_and_latest_of_one_path_are_separate_reads(
    vault_env: dict[str, str], kv: str
) -> None:
    wanted = [refs.parse(f"secret://secret/{kv}?version={n}#password") for n in (1, 2)]
    wanted.append(refs.parse(f"secret://secret/{kv}#password"))
    values = resolve.resolve(open_backend("vault", vault_env), wanted)
    assert [values[ref].value for ref in wanted] == [b"pw-v1", b"pw-v2", b"pw-v3"]


def test_vault_pin_beyond_the_latest_is_not_found(vault_env: dict[str, str], kv: str) -> None:
    with pytest.raises(Failures) as caught:
        resolved("vault", vault_env, f"secret://secret/{kv}?version=9#password")
    assert [type(error) for error in caught.value.errors] == [SecretNotFound]


def test_vault_pin_of_a_deleted_version_is_not_found(
    openbao: OpenBao, vault_env: dict[str, str], kv: str
) -> None:
    openbao.client().secrets.kv.v2.delete_secret_versions(
        path=kv, versions=[2], mount_point="secret"
    )
    with pytest.raises(Failures) as caught:
        resolved("vault", vault_env, f"secret://secret/{kv}?version=2#password")
    [error] = caught.value.errors
    assert isinstance(error, SecretNotFound)
    assert "version 2" in error.message  # Vault answers 404: the error names the version asked


@pytest.mark.parametrize("pin", ["0", "-1", "latest", "1.5", "01"])
def test_vault_pin_must_be_a_positive_integer(vault_env: dict[str, str], pin: str) -> None:
    error = refused("vault", vault_env, f"secret://secret/kms/db?version={pin}#password")
    assert "not a KV version 2 version" in error.message


def test_vault_check_shows_the_version(
    launch_backend: Callable[..., Launcher], vault_env: dict[str, str], kv: str
) -> None:
    launch = launch_backend("vault", vault_env)
    toml = (
        f'old = "secret://secret/{kv}?version=1#password"\nnew = "secret://secret/{kv}#password"\n'
    )
    lines = check_lines(launch(toml, None, "--check"))
    assert lines["old"][1:] == ["ok", "5 bytes", "version 1"]
    assert lines["new"][1:] == ["ok", "5 bytes", "version 3"]


def test_vault_pin_inside_a_url_launches(
    launch_backend: Callable[..., Launcher], vault_env: dict[str, str], kv: str
) -> None:
    launch = launch_backend("vault", vault_env)
    toml = (
        f'url = "postgresql://kms:secret://secret/{kv}?version=2#password@db.internal:5432/kms"\n'
    )
    assert served(launch(toml))["url"] == "postgresql://kms:pw-v2@db.internal:5432/kms"


# -- aws-ssm: version number or label -----------------------------------------------------------


@pytest.fixture
def ssm(aws_ssm_store: object, moto_ssm: MotoServer) -> MotoServer:
    moto_ssm.reset()
    moto_ssm.put("/kms/db", "ssm-v1")
    moto_ssm.put("/kms/db", "ssm-v2")
    moto_ssm.put("/kms/db", "ssm-v3")
    moto_ssm.client().label_parameter_version(Name="/kms/db", ParameterVersion=1, Labels=["stable"])
    return moto_ssm


@pytest.fixture
def ssm_env(moto_ssm: MotoServer) -> dict[str, str]:
    return {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_ENDPOINT_URL_SSM": moto_ssm.url,
    }


def test_ssm_pin_by_number_reads_that_version(ssm: MotoServer, ssm_env: dict[str, str]) -> None:
    secret = resolved("aws-ssm", ssm_env, f"secret://{REGION}/kms/db?version=2")
    assert (secret.value, secret.version) == (b"ssm-v2", "2")


def test_ssm_pin_by_label_reads_the_labelled_version_and_names_its_number(
    ssm: MotoServer, ssm_env: dict[str, str]
) -> None:
    secret = resolved("aws-ssm", ssm_env, f"secret://{REGION}/kms/db?version=stable")
    assert (secret.value, secret.version) == (b"ssm-v1", "1")


def test_ssm_unpinned_reads_the_latest_and_says_which(
    ssm: MotoServer, ssm_env: dict[str, str]
) -> None:
    secret = resolved("aws-ssm", ssm_env, f"secret://{REGION}/kms/db")
    assert (secret.value, secret.version) == (b"ssm-v3", "3")


def test_ssm_created_is_last_modified_date(ssm: MotoServer, ssm_env: dict[str, str]) -> None:
    [answer] = ssm.client().get_parameters(Names=["/kms/db:2"])["Parameters"]
    secret = resolved("aws-ssm", ssm_env, f"secret://{REGION}/kms/db?version=2")
    assert secret.created == answer["LastModifiedDate"].timestamp()


def test_ssm_seed_percent_3a_form_still_works(ssm: MotoServer, ssm_env: dict[str, str]) -> None:
    assert resolved("aws-ssm", ssm_env, f"secret://{REGION}/kms/db%3A1").value == b"ssm-v1"
    assert resolved("aws-ssm", ssm_env, f"secret://{REGION}/kms/db%3Astable").value == b"ssm-v1"


def test_ssm_both_selector_forms_at_once_are_a_bad_reference(ssm_env: dict[str, str]) -> None:
    error = refused("aws-ssm", ssm_env, f"secret://{REGION}/kms/db%3A1?version=1")
    assert "not both" in error.message


def test_ssm_a_pin_outside_the_name_alphabet_is_a_bad_reference(ssm_env: dict[str, str]) -> None:
    refused("aws-ssm", ssm_env, f"secret://{REGION}/kms/db?version=a%2Fb")


def test_ssm_unknown_version_is_not_found(ssm: MotoServer, ssm_env: dict[str, str]) -> None:
    with pytest.raises(Failures) as caught:
        resolved("aws-ssm", ssm_env, f"secret://{REGION}/kms/db?version=9")
    assert [type(error) for error in caught.value.errors] == [SecretNotFound]


def test_ssm_check_shows_the_version(
    ssm: MotoServer, launch_backend: Callable[..., Launcher], ssm_env: dict[str, str]
) -> None:
    launch = launch_backend("aws-ssm", ssm_env)
    toml = f'old = "secret://{REGION}/kms/db?version=stable"\nnew = "secret://{REGION}/kms/db"\n'
    lines = check_lines(launch(toml, None, "--check"))
    assert lines["old"][1:] == ["ok", "6 bytes", "version 1"]
    assert lines["new"][1:] == ["ok", "6 bytes", "version 3"]


# -- azure-kv: version id -----------------------------------------------------------------------


@pytest.fixture
def azure_versions(azure_fake: AzureFake) -> list[str]:
    return [azure_fake.put("db-password", f"az-v{number}") for number in (1, 2)]


def test_azure_pin_reads_that_version_and_reports_its_id(
    azure_fake: AzureFake, azure_versions: list[str]
) -> None:
    first = azure_versions[0]
    secret = resolved(
        "azure-kv",
        azure_fake.environ(),
        f"secret://{DEFAULT_VAULT}/secrets/db-password?version={first}",
    )
    assert (secret.value, secret.version) == (b"az-v1", first)


def test_azure_seed_version_segment_still_works(
    azure_fake: AzureFake, azure_versions: list[str]
) -> None:
    first = azure_versions[0]
    secret = resolved(
        "azure-kv", azure_fake.environ(), f"secret://{DEFAULT_VAULT}/secrets/db-password/{first}"
    )
    assert (secret.value, secret.version) == (b"az-v1", first)


def test_azure_unpinned_reports_the_current_version_id(
    azure_fake: AzureFake, azure_versions: list[str]
) -> None:
    secret = resolved(
        "azure-kv", azure_fake.environ(), f"secret://{DEFAULT_VAULT}/secrets/db-password"
    )
    assert (secret.value, secret.version) == (b"az-v2", azure_versions[1])


def test_azure_created_is_the_versions_attribute(
    azure_fake: AzureFake, azure_versions: list[str]
) -> None:
    first = azure_versions[0]
    secret = resolved(
        "azure-kv",
        azure_fake.environ(),
        f"secret://{DEFAULT_VAULT}/secrets/db-password?version={first}",
    )
    assert secret.created == float(
        azure_fake.secrets[(DEFAULT_VAULT, "db-password")].created[first]
    )


def test_azure_both_version_forms_are_a_bad_reference_even_when_equal(
    azure_fake: AzureFake,
) -> None:
    version = "0123456789abcdef0123456789abcdef"
    error = refused(
        "azure-kv",
        azure_fake.environ(),
        f"secret://{DEFAULT_VAULT}/secrets/db-password/{version}?version={version}",
    )
    assert "not both" in error.message
    assert not azure_fake.vault.counts


def test_azure_unknown_version_is_not_found(
    azure_fake: AzureFake, azure_versions: list[str]
) -> None:
    with pytest.raises(Failures) as caught:
        resolved(
            "azure-kv",
            azure_fake.environ(),
            f"secret://{DEFAULT_VAULT}/secrets/db-password?version={'0' * 32}",
        )
    assert [type(error) for error in caught.value.errors] == [SecretNotFound]


def test_azure_a_pin_that_is_no_version_id_is_a_bad_reference(azure_fake: AzureFake) -> None:
    refused(
        "azure-kv",
        azure_fake.environ(),
        f"secret://{DEFAULT_VAULT}/secrets/db-password?version=a.b",
    )


# -- backends that cannot pin -------------------------------------------------------------------


def test_cosmian_rejects_a_pin_because_object_ids_are_immutable(cosmian_fake: CosmianFake) -> None:
    uid = cosmian_fake.put_secret_data(b"kms-value")
    error = refused(
        "cosmian-kms",
        {"COSMIAN_KMS_CA_CERT": str(cosmian_fake.ca_path)},
        cosmian_fake.ref(uid) + "?version=2",
    )
    assert "immutable" in error.message


def test_cosmian_reports_the_uid_as_version_and_no_creation_time(cosmian_fake: CosmianFake) -> None:
    uid = cosmian_fake.put_secret_data(b"kms-value")
    secret = resolved(
        "cosmian-kms", {"COSMIAN_KMS_CA_CERT": str(cosmian_fake.ca_path)}, cosmian_fake.ref(uid)
    )
    assert (secret.value, secret.version, secret.created) == (b"kms-value", uid, None)


def test_file_rejects_a_pin(secrets_dir: Path) -> None:
    (secrets_dir / "db").write_text("pw\n")
    refused("file", {"KMS_SECRETS_DIR": str(secrets_dir)}, "secret://db?version=1")


def test_env_rejects_a_pin() -> None:
    refused("env", {"DB_PASSWORD": "pw"}, "secret://DB_PASSWORD?version=1")


def test_env_reports_no_version() -> None:
    secret = resolved("env", {"DB_PASSWORD": "pw"}, "secret://DB_PASSWORD")
    assert (secret.version, secret.created) == (None, None)


def test_file_version_is_stable_while_the_file_is_unchanged(secrets_dir: Path) -> None:
    (secrets_dir / "db").write_text("pw\n")
    environ = {"KMS_SECRETS_DIR": str(secrets_dir)}
    assert (
        resolved("file", environ, "secret://db").version
        == resolved("file", environ, "secret://db").version
    )


def test_file_version_changes_when_the_file_is_replaced_by_one_of_the_same_size(
    secrets_dir: Path,
) -> None:
    environ = {"KMS_SECRETS_DIR": str(secrets_dir)}
    (secrets_dir / "db").write_text("pw-1\n")
    before = resolved("file", environ, "secret://db")
    (secrets_dir / "db.new").write_text("pw-2\n")
    stat = (secrets_dir / "db").stat()
    os.utime(secrets_dir / "db.new", ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same mtime too
    (secrets_dir / "db.new").replace(secrets_dir / "db")  # the atomic swap of a Kubernetes volume
    after = resolved("file", environ, "secret://db")
    assert after.value == b"pw-2"
    assert after.version != before.version


def test_file_version_changes_when_the_file_is_rewritten_in_place(secrets_dir: Path) -> None:
    environ = {"KMS_SECRETS_DIR": str(secrets_dir)}
    path = secrets_dir / "db"
    path.write_text("pw-1\n")
    before = resolved("file", environ, "secret://db")
    os_stat = path.stat()
    path.write_text("pw-22\n")  # same inode, new size
    after = resolved("file", environ, "secret://db")
    assert path.stat().st_ino == os_stat.st_ino
    assert after.version != before.version


def test_file_created_is_the_files_mtime(secrets_dir: Path) -> None:
    path = secrets_dir / "db"
    path.write_text("pw\n")
    assert (
        resolved("file", {"KMS_SECRETS_DIR": str(secrets_dir)}, "secret://db").created
        == path.stat().st_mtime
    )


def test_azure_check_shows_the_version_id(
    azure_fake: AzureFake, azure_versions: list[str], launch_backend: Callable[..., Launcher]
) -> None:
    first, second = azure_versions
    toml = (
        f'old = "secret://{DEFAULT_VAULT}/secrets/db-password?version={first}"\n'
        f'new = "secret://{DEFAULT_VAULT}/secrets/db-password"\n'
    )
    lines = check_lines(launch_backend("azure-kv", azure_fake.environ())(toml, None, "--check"))
    assert lines["old"][1:] == ["ok", "5 bytes", f"version {first}"]
    assert lines["new"][1:] == ["ok", "5 bytes", f"version {second}"]
