"""The built-in backends: `file` (a directory of secret files) and `env` (environment variables)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from launcher import refs, resolve
from launcher.errors import BadReference, Failures, SecretNotFound
from tests.conftest import open_backend


def fetch(name: str, environ: dict[str, str], *texts: str) -> dict[str, bytes]:
    backend = open_backend(name, environ, 5)
    values = resolve.resolve(backend, [refs.parse(text) for text in texts])
    return {ref.text: secret.value for ref, secret in values.items()}


def fail(name: str, environ: dict[str, str], text: str) -> Exception:
    with pytest.raises(Failures) as caught:
        fetch(name, environ, text)
    [error] = caught.value.errors
    assert error.ref == text
    return error


# -- file ------------------------------------------------------------------------------------


def test_file_reads_nested_names_under_the_directory(secrets_dir: Path) -> None:
    (secrets_dir / "kms" / "db").mkdir(parents=True)
    (secrets_dir / "kms" / "db" / "password").write_text("nested")
    assert fetch("file", {"KMS_SECRETS_DIR": str(secrets_dir)}, "secret://kms/db/password") == {
        "secret://kms/db/password": b"nested"
    }


def test_file_drops_exactly_one_trailing_newline(secrets_dir: Path) -> None:
    (secrets_dir / "one").write_text("value\n")
    (secrets_dir / "two").write_text("value\n\n")
    (secrets_dir / "crlf").write_text("value\r\n")
    values = fetch("file", {"KMS_SECRETS_DIR": str(secrets_dir)}, "secret://one", "secret://two", "secret://crlf")
    assert values == {"secret://one": b"value", "secret://two": b"value\n", "secret://crlf": b"value\r"}


def test_file_delivers_secret_files_byte_exact(secrets_dir: Path) -> None:
    (secrets_dir / "key").write_bytes(b"key\n")
    assert fetch("file", {"KMS_SECRETS_DIR": str(secrets_dir)}, "secret+file://key") == {"secret+file://key": b"key\n"}


def test_file_prefers_kms_secrets_dir_then_credentials_directory(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    for directory in (first, second):
        directory.mkdir()
        (directory / "x").write_text(directory.name)
    both = {"KMS_SECRETS_DIR": str(first), "CREDENTIALS_DIRECTORY": str(second)}
    assert fetch("file", both, "secret://x") == {"secret://x": b"first"}
    assert fetch("file", {"CREDENTIALS_DIRECTORY": str(second)}, "secret://x") == {"secret://x": b"second"}


def test_file_defaults_to_run_secrets(run_launcher, write_config, tmp_path: Path) -> None:
    # A mount namespace of its own with an empty /run: /run/secrets/db exists only there.
    (tmp_path / "db").write_text("from-run-secrets\n")
    setup = 'mount -t tmpfs none /run && mkdir /run/secrets && cp "$0" /run/secrets/db && exec "$@"'
    path = write_config('password = "secret://db"\n')
    launch = run_launcher(
        "--backend", "file", "-c", str(path),
        prefix=["unshare", "--mount", "sh", "-c", setup, str(tmp_path / "db")],
    )
    assert launch.returncode == 0, launch.stderr
    assert launch.report["parsed"] == {"password": "from-run-secrets"}


@pytest.mark.parametrize(
    "text", ["secret://../outside", "secret://a/../../outside", "secret://%2Fetc%2Fpasswd", "secret://./x"]
)
def test_file_refuses_names_that_could_leave_the_directory(secrets_dir: Path, text: str) -> None:
    assert isinstance(fail("file", {"KMS_SECRETS_DIR": str(secrets_dir)}, text), BadReference)


def test_file_refuses_a_symlink_that_leaves_the_directory(secrets_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "outside").write_text("not yours")
    (secrets_dir / "link").symlink_to(tmp_path / "outside")
    error = fail("file", {"KMS_SECRETS_DIR": str(secrets_dir)}, "secret://link")
    assert isinstance(error, BadReference)
    assert "outside" in error.message


def test_file_follows_symlinks_inside_the_directory_as_kubernetes_lays_them_out(secrets_dir: Path) -> None:
    (secrets_dir / "..2026_11_29").mkdir()
    (secrets_dir / "..2026_11_29" / "password").write_text("k8s")
    (secrets_dir / "..data").symlink_to("..2026_11_29")
    (secrets_dir / "password").symlink_to("..data/password")
    assert fetch("file", {"KMS_SECRETS_DIR": str(secrets_dir)}, "secret://password") == {"secret://password": b"k8s"}


def test_file_missing_is_not_found(secrets_dir: Path) -> None:
    assert isinstance(fail("file", {"KMS_SECRETS_DIR": str(secrets_dir)}, "secret://absent"), SecretNotFound)


def test_file_that_is_a_directory_is_not_a_secret(secrets_dir: Path) -> None:
    (secrets_dir / "dir").mkdir()
    assert isinstance(fail("file", {"KMS_SECRETS_DIR": str(secrets_dir)}, "secret://dir"), SecretNotFound)


@pytest.mark.parametrize("text", ["secret://x#field", "secret://host:99/x"])
def test_file_refuses_fragments_and_ports(secrets_dir: Path, text: str) -> None:
    assert isinstance(fail("file", {"KMS_SECRETS_DIR": str(secrets_dir)}, text), BadReference)


def test_file_unreadable_is_access_denied(secrets_dir: Path, clean_env: dict[str, str]) -> None:
    (secrets_dir / "locked").write_text("locked")
    (secrets_dir / "locked").chmod(0)
    config = secrets_dir.parent / "kms.toml"
    config.write_text('a = "secret://locked"\n')
    drop = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"] if os.geteuid() == 0 else []
    result = subprocess.run(
        [*drop, sys.executable, "-m", "launcher", "--backend", "file", "-c", str(config), "--check"],
        env={**clean_env, "KMS_SECRETS_DIR": str(secrets_dir)}, capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 77, result.stderr
    assert "a: secret://locked: cannot read" in result.stderr
    assert "permission denied" in result.stderr.lower()


def test_a_value_read_but_unusable_is_reported_by_reference_never_by_value(
    run_launcher, write_config, secrets_dir: Path
) -> None:
    # Both files are read; neither can be used as asked. The report names key and reference.
    (secrets_dir / "p12").write_text("not base64: unusable-secret-value-31c")
    (secrets_dir / "bin").write_bytes(b"\xff binary-secret-value-8d2")
    path = write_config('[tls]\np12 = "secret+file+base64://p12"\npassword = "secret://bin"\n')
    launch = run_launcher("--backend", "file", "-c", str(path), env={"KMS_SECRETS_DIR": str(secrets_dir)})
    assert launch.returncode == 65
    assert sorted(launch.stderr.splitlines()) == [
        "kms-launch: tls.p12: secret+file+base64://p12: the secret is not valid base64",
        "kms-launch: tls.password: secret://bin: the secret is not UTF-8 text;"
        " deliver bytes with secret+file:// instead",
    ]
    assert "unusable-secret-value-31c" not in launch.output
    assert "binary-secret-value-8d2" not in launch.output


# -- env -------------------------------------------------------------------------------------


def test_env_reads_the_named_variable() -> None:
    assert fetch("env", {"DB_PASSWORD": "from-env"}, "secret://DB_PASSWORD") == {"secret://DB_PASSWORD": b"from-env"}


def test_env_missing_variable_is_not_found() -> None:
    error = fail("env", {}, "secret://ABSENT")
    assert isinstance(error, SecretNotFound)
    assert "ABSENT is not set" in error.message


@pytest.mark.parametrize("text", ["secret://1BAD", "secret://A/B", "secret://A#f", "secret://A:80", "secret://A-B"])
def test_env_refuses_what_is_not_a_variable_name(text: str) -> None:
    assert isinstance(fail("env", {"A": "x"}, text), BadReference)


def test_env_removes_resolved_variables_from_the_servers_environment(run_launcher, write_config) -> None:
    path = write_config('password = "secret://DB_PASSWORD"\n')
    launch = run_launcher("--backend", "env", "-c", str(path), env={"DB_PASSWORD": "env-secret", "OTHER": "kept"})
    assert launch.returncode == 0, launch.stderr
    assert launch.report["parsed"] == {"password": "env-secret"}
    assert "DB_PASSWORD" not in launch.report["environ"]
    assert launch.report["environ"]["OTHER"] == "kept"


def test_env_keep_env_keeps_a_resolved_variable(run_launcher, write_config) -> None:
    path = write_config('password = "secret://DB_PASSWORD"\n')
    launch = run_launcher("--backend", "env", "--keep-env", "DB_PASSWORD", "-c", str(path), env={"DB_PASSWORD": "kept"})
    assert launch.returncode == 0, launch.stderr
    assert launch.report["environ"]["DB_PASSWORD"] == "kept"
