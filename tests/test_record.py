"""The launch record: what every launch and check used (config digest, versions, lengths), never
a value nor a hash of one; and the drift check that compares a record with the backend now."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CONTRACT_BACKENDS, Launch, served
from tests.servers.moto_ssm import ACCESS_KEY, REGION, SECRET_KEY
from tests.servers.secret_stores import SecretStore

# Backends with no version identifier, and those whose versions carry no creation time.
UNVERSIONED = {"env"}
NO_CREATION_TIME = {"env", "cosmian-kms"}


@pytest.fixture(params=CONTRACT_BACKENDS)
def store(request: pytest.FixtureRequest) -> SecretStore:
    return request.getfixturevalue(f"{request.param.replace('-', '_')}_store")


def hashes_of(value: str) -> list[str]:
    data = value.encode()
    return [
        hashlib.sha256(data).hexdigest(),
        hashlib.sha1(data).hexdigest(),
        hashlib.md5(data).hexdigest(),
    ]


def assert_nothing_secret(text: str, *values: str) -> None:
    lowered = text.lower()
    for value in values:
        assert value not in text
        for digest in hashes_of(value):
            assert digest not in lowered


def test_a_check_records_each_reference_with_its_keys_version_and_length(
    store: SecretStore,
    run_launcher: Callable[..., Launch],
    write_config: Callable[..., Path],
    tmp_path: Path,
) -> None:
    value = "record-value-3c9e"
    reference = store.put(value)
    config = write_config(f'[db]\npassword = "{reference}"\n[again]\np = "{reference}"\n')
    record_path = tmp_path / "record.json"
    result = run_launcher(
        "--check", "--json", "--backend", store.backend, "-c", str(config),
        "--record", str(record_path), env=store.environ(),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert json.loads(record_path.read_text()) == printed
    assert printed["format"] == 1
    assert printed["backend"] == store.backend
    assert printed["config"] == {
        "path": str(config),
        "sha256": hashlib.sha256(config.read_bytes()).hexdigest(),
    }
    [entry] = printed["references"]
    assert entry["reference"] == reference
    assert entry["keys"] == ["db.password", "again.p"]
    assert entry["length"] == len(value)
    assert (entry["version"] is None) == (store.backend in UNVERSIONED)
    assert (entry["created"] is None) == (store.backend in NO_CREATION_TIME)
    assert_nothing_secret(result.output + record_path.read_text(), value)


def test_a_launch_writes_its_record_to_the_runtime_directory_and_one_line_to_stderr(
    secrets_dir: Path,
    run_launcher: Callable[..., Launch],
    write_config: Callable[..., Path],
    tmp_path: Path,
) -> None:
    (secrets_dir / "db").write_text("launch-record-value\n")
    runtime = tmp_path / "run"
    runtime.mkdir()
    config = write_config('[db]\npassword = "secret://db"\n')
    result = run_launcher(
        "--backend", "file", "-c", str(config),
        env={"KMS_SECRETS_DIR": str(secrets_dir), "RUNTIME_DIRECTORY": str(runtime)},
    )  # fmt: skip
    assert served(result)["db"]["password"] == "launch-record-value"
    record = json.loads((runtime / "launch.json").read_text())
    assert [entry["keys"] for entry in record["references"]] == [["db.password"]]
    [line] = [line for line in result.stderr.splitlines() if "launch record" in line]
    assert "secret://db version " in line
    assert_nothing_secret(
        result.output + (runtime / "launch.json").read_text(), "launch-record-value"
    )


def test_quiet_keeps_the_record_file_but_not_the_line(
    secrets_dir: Path,
    run_launcher: Callable[..., Launch],
    write_config: Callable[..., Path],
    tmp_path: Path,
) -> None:
    (secrets_dir / "db").write_text("v")
    config = write_config('a = "secret://db"\n')
    path = tmp_path / "quiet.json"
    result = run_launcher(
        "-q", "--backend", "file", "-c", str(config), "--record", str(path),
        env={"KMS_SECRETS_DIR": str(secrets_dir)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert json.loads(path.read_text())["references"][0]["reference"] == "secret://db"


def test_a_record_that_cannot_be_written_stops_the_launch_with_74(
    secrets_dir: Path,
    run_launcher: Callable[..., Launch],
    write_config: Callable[..., Path],
    tmp_path: Path,
) -> None:
    (secrets_dir / "db").write_text("v")
    config = write_config('a = "secret://db"\n')
    result = run_launcher(
        "--backend", "file", "-c", str(config), "--record", str(tmp_path / "absent" / "r.json"),
        env={"KMS_SECRETS_DIR": str(secrets_dir)},
    )  # fmt: skip
    assert result.returncode == 74, result.stderr
    assert "cannot write the launch record" in result.stderr
    assert result.report is None


# -- drift ----------------------------------------------------------------------------------------


@pytest.fixture
def check(
    run_launcher: Callable[..., Launch], write_config: Callable[..., Path], tmp_path: Path
) -> Callable[..., Launch]:
    """check(backend, toml, env, *args): `kms-launch --check` on that config."""

    def run(backend: str, toml: str, env: dict[str, str], *args: str) -> Launch:
        config = tmp_path / "kms.toml"
        if not config.exists() or config.read_text() != toml:
            config = write_config(toml)
        return run_launcher("--check", "--backend", backend, "-c", str(config), *args, env=env)

    return run


def _record_then_drift(
    check: Callable[..., Launch],
    backend: str,
    toml: str,
    env: dict[str, str],
    rotate: Callable[[], None],
    tmp_path: Path,
    *args: str,
) -> tuple[Launch, Launch]:
    record = tmp_path / "before.json"
    first = check(backend, toml, env, "--record", str(record))
    assert first.returncode == 0, first.stderr
    same = check(backend, toml, env, "--against", str(record))
    assert same.returncode == 0, same.stderr
    rotate()
    return same, check(backend, toml, env, "--against", str(record), *args)


def test_drift_is_0_when_nothing_changed_and_3_with_old_and_new_version_after_a_vault_rotation(
    openbao: Any, check: Callable[..., Launch], tmp_path: Path
) -> None:
    openbao.put("drift/db", password="first-password")
    env = {"VAULT_ADDR": openbao.url, "VAULT_TOKEN": openbao.token}
    toml = 'db = "secret://secret/drift/db#password"\n'
    _, after = _record_then_drift(
        check,
        "vault",
        toml,
        env,
        lambda: openbao.put("drift/db", password="second-password"),
        tmp_path,
    )
    assert after.returncode == 3, after.stderr
    assert "changed: db: secret://secret/drift/db#password: version 1 -> 2" in after.stderr
    assert_nothing_secret(after.output, "first-password", "second-password")


def test_a_version_younger_than_settle_does_not_count_yet(
    openbao: Any, check: Callable[..., Launch], tmp_path: Path
) -> None:
    openbao.put("drift/settle", password="one")
    env = {"VAULT_ADDR": openbao.url, "VAULT_TOKEN": openbao.token}
    toml = 'db = "secret://secret/drift/settle#password"\n'
    _, after = _record_then_drift(
        check, "vault", toml, env, lambda: openbao.put("drift/settle", password="two"), tmp_path,
        "--settle", "3600",
    )  # fmt: skip
    assert after.returncode == 0, after.stderr
    assert (
        "settling (younger than --settle 3600s): db: secret://secret/drift/settle#password: version 1 -> 2"
        in after.stderr
    )


def test_a_version_older_than_settle_counts(
    secrets_dir: Path, check: Callable[..., Launch], tmp_path: Path
) -> None:
    secret = secrets_dir / "db"
    secret.write_text("one")
    env = {"KMS_SECRETS_DIR": str(secrets_dir)}

    def rotate_an_hour_ago() -> None:
        secret.unlink()
        secret.write_text("two")
        an_hour_ago = time.time() - 3600
        os.utime(secret, (an_hour_ago, an_hour_ago))

    _, after = _record_then_drift(
        check, "file", 'a = "secret://db"\n', env, rotate_an_hour_ago, tmp_path, "--settle", "60"
    )
    assert after.returncode == 3, after.stderr
    assert "changed: a: secret://db: version " in after.stderr


def test_a_new_ssm_parameter_version_is_drift(
    moto_ssm: Any, check: Callable[..., Launch], tmp_path: Path
) -> None:
    moto_ssm.put("/drift/db", "one")
    env = {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_ENDPOINT_URL_SSM": moto_ssm.url,
    }  # fmt: skip
    _, after = _record_then_drift(
        check, "aws-ssm", f'a = "secret://{REGION}/drift/db"\n', env,
        lambda: moto_ssm.put("/drift/db", "two"), tmp_path,
    )  # fmt: skip
    assert after.returncode == 3, after.stderr
    assert f"changed: a: secret://{REGION}/drift/db: version 1 -> 2" in after.stderr


def test_a_new_azure_secret_version_is_drift(
    azure_fake: Any, check: Callable[..., Launch], tmp_path: Path
) -> None:
    first = azure_fake.put("drift", "one")
    second: list[str] = []
    _, after = _record_then_drift(
        check, "azure-kv", 'a = "secret://kms/secrets/drift"\n', azure_fake.environ(),
        lambda: second.append(azure_fake.put("drift", "two")), tmp_path,
    )  # fmt: skip
    assert after.returncode == 3, after.stderr
    assert f"changed: a: secret://kms/secrets/drift: version {first} -> {second[0]}" in after.stderr


def test_a_changed_config_is_drift(
    secrets_dir: Path, check: Callable[..., Launch], tmp_path: Path
) -> None:
    (secrets_dir / "db").write_text("v")
    env = {"KMS_SECRETS_DIR": str(secrets_dir)}
    record = tmp_path / "config.json"
    assert check("file", 'a = "secret://db"\n', env, "--record", str(record)).returncode == 0
    after = check("file", 'a = "secret://db"\nport = 9998\n', env, "--against", str(record))
    assert after.returncode == 3, after.stderr
    assert "changed: config: config " in after.stderr


def test_a_record_that_is_not_one_is_65_and_a_missing_one_66(
    secrets_dir: Path, check: Callable[..., Launch], tmp_path: Path
) -> None:
    (secrets_dir / "db").write_text("v")
    env = {"KMS_SECRETS_DIR": str(secrets_dir)}
    garbage = tmp_path / "garbage.json"
    garbage.write_text('{"format": 1}')
    assert check("file", 'a = "secret://db"\n', env, "--against", str(garbage)).returncode == 65
    assert (
        check("file", 'a = "secret://db"\n', env, "--against", str(tmp_path / "no.json")).returncode
        == 66
    )


def test_against_settle_and_json_without_check_are_usage_errors(
    run_launcher: Callable[..., Launch], write_config: Callable[..., Path]
) -> None:
    config = write_config("a = 1\n")
    for args in (["--json"], ["--against", "x.json"], ["--settle", "5"]):
        result = run_launcher("-c", str(config), *args)
        assert result.returncode == 2, result.stderr
        assert result.report is None


def test_secrets_from_systemd_credentials_are_unversioned_so_a_fresh_copy_is_no_drift(
    check: Callable[..., Launch], tmp_path: Path
) -> None:
    # systemd hands every unit (and every start) a new copy of its credentials: another inode
    # and mtime for the same bytes. A drift check must not take that for a rotation.
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "db").write_text("same")
    env = {"CREDENTIALS_DIRECTORY": str(credentials)}
    record = tmp_path / "credentials.json"
    first = check("file", 'a = "secret://db"\n', env, "--record", str(record))
    assert first.returncode == 0, first.stderr
    assert json.loads(record.read_text())["references"][0]["version"] is None
    (credentials / "db").unlink()
    (credentials / "db").write_text("same")  # the next unit's copy
    again = check("file", 'a = "secret://db"\n', env, "--against", str(record))
    assert again.returncode == 0, again.stderr
