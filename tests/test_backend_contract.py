"""The contract every backend passes: each reference gets its value, misses name the reference,
no error text ever holds a value."""

from __future__ import annotations

import pytest

from launcher import backends, refs, resolve
from launcher.errors import Failures, SecretNotFound
from tests import conftest
from tests.conftest import CONTRACT_BACKENDS
from tests.servers.secret_stores import SecretStore

VALUES = ["plain", 'quote " backslash \\ newline \n end', "ünïcødé ✓", "x" * 5000, "trailing space "]


@pytest.fixture(params=CONTRACT_BACKENDS)
def store(request: pytest.FixtureRequest) -> SecretStore:
    return request.getfixturevalue(f"{request.param.replace('-', '_')}_store")


def open_backend(store: SecretStore) -> backends.Backend:
    return conftest.open_backend(store.backend, store.environ(), 20)


def test_every_reference_gets_its_own_value(store: SecretStore) -> None:
    written = {store.put(value): value for value in VALUES}
    backend = open_backend(store)
    wanted = [refs.parse(text) for text in written]
    values = resolve.resolve(backend, wanted)
    assert {ref.text: secret.value.decode() for ref, secret in values.items()} == written


def test_a_missing_secret_is_not_found_and_names_its_reference(store: SecretStore) -> None:
    present = store.put("present-value")
    missing = store.missing()
    backend = open_backend(store)
    with pytest.raises(Failures) as caught:
        resolve.resolve(backend, [refs.parse(present), refs.parse(missing)])
    assert [(type(e), e.ref) for e in caught.value.errors] == [(SecretNotFound, missing)]
    assert caught.value.exit_code == 65


def test_no_error_text_contains_a_value(store: SecretStore) -> None:
    secret = "s3cr3t-contract-value-7f1d"
    present = store.put(secret)
    backend = open_backend(store)
    with pytest.raises(Failures) as caught:
        resolve.resolve(backend, [refs.parse(present), refs.parse(store.missing())])
    for error in caught.value.errors:
        assert secret not in error.line()
        assert secret not in repr(error)


# Written out from the README ("The backend's credentials"), not read from the code under test.
CREDENTIAL_VARIABLES = frozenset({
    "VAULT_TOKEN", "VAULT_SECRET_ID",
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
    "AZURE_CLIENT_SECRET", "AZURE_CLIENT_CERTIFICATE_PASSWORD",
    "COSMIAN_KMS_SECRET_TOKEN",
})  # fmt: skip


def credentials(store: SecretStore) -> list[str]:
    """The values in the store's environment that are credentials (for `env`: the secrets)."""
    return [v for k, v in store.environ().items() if v and (k in CREDENTIAL_VARIABLES or store.backend == "env")]


def test_a_verbose_launch_prints_no_value_and_no_credential(
    store: SecretStore, run_launcher, write_config
) -> None:
    secret = "contract-verbose-value-51c2"
    reference = store.put(secret)
    config = write_config(f'[db]\nurl = "postgresql://kms:{reference}@db:5432/kms"\n')
    launch = run_launcher("-v", "--backend", store.backend, "-c", str(config), env=store.environ())
    assert launch.returncode == 0, launch.stderr
    assert launch.report["parsed"]["db"]["url"] == f"postgresql://kms:{secret}@db:5432/kms"
    assert "resolved 1 references" in launch.stderr
    for hidden in (secret, *credentials(store)):
        assert hidden not in launch.output


def test_a_failed_verbose_launch_prints_no_value_and_no_credential(
    store: SecretStore, run_launcher, write_config
) -> None:
    secret = "contract-failing-value-9e07"
    config = write_config(f'a = "{store.put(secret)}"\nb = "{store.missing()}"\nc = "secret://"\n')
    launch = run_launcher("-v", "--backend", store.backend, "-c", str(config), env=store.environ())
    assert launch.returncode == 65
    assert launch.report is None
    assert "Traceback" not in launch.output
    for hidden in (secret, *credentials(store)):
        assert hidden not in launch.output


def test_the_servers_environment_holds_no_credential_of_the_backend(
    store: SecretStore, run_launcher, write_config
) -> None:
    config = write_config(f'a = "{store.put("scrub-check")}"\n')
    launch = run_launcher("--backend", store.backend, "-c", str(config), env=store.environ())
    assert launch.returncode == 0, launch.stderr
    environ = launch.report["environ"]
    assert credentials(store) or store.backend == "file"  # the check below sees something
    assert set(credentials(store)) & set(environ.values()) == set()
    removed = CREDENTIAL_VARIABLES | ({*store.environ()} if store.backend == "env" else set())
    assert removed & set(environ) == set()
