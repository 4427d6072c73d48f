"""The backend registry: name -> "module:Class", imported only when that backend is chosen."""

from __future__ import annotations

import importlib
import os
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from launcher.deadline import Deadline
from launcher.errors import BadReference, NotConfigured, UsageError
from launcher.files import read_credential
from launcher.refs import Ref


@dataclass(frozen=True)
class Spec:
    """How to find a backend without importing it."""

    target: str  # "module:Class"
    extra: str | None  # the pip extra that installs its SDK
    # Credential variables removed from the server's environment. Kept here, not on the class,
    # because every backend's credentials are scrubbed whichever backend runs, and reading them
    # from the classes would import every SDK.
    secret_env: tuple[str, ...] = ()


REGISTRY: dict[str, Spec] = {
    "vault": Spec(
        "launcher.backends.vault:VaultBackend", "vault", ("VAULT_TOKEN", "VAULT_SECRET_ID")
    ),
    "aws-ssm": Spec(
        "launcher.backends.aws_ssm:SsmBackend",
        "aws-ssm",
        ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"),
    ),
    "aws-sm": Spec(
        "launcher.backends.aws_sm:SecretsManagerBackend",
        "aws-sm",
        ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"),
    ),
    "azure-kv": Spec(
        "launcher.backends.azure_kv:AzureKeyVaultBackend",
        "azure-kv",
        # IDENTITY_HEADER and MSI_SECRET let any process with them ask the platform's local
        # endpoint for the managed identity's tokens (App Service, Azure Machine Learning).
        (
            "AZURE_CLIENT_SECRET",
            "AZURE_CLIENT_CERTIFICATE_PASSWORD",
            "IDENTITY_HEADER",
            "MSI_SECRET",
        ),
    ),
    "cosmian-kms": Spec(
        "launcher.backends.cosmian_kms:CosmianKmsBackend",
        "cosmian-kms",
        ("COSMIAN_KMS_SECRET_TOKEN",),
    ),
    "file": Spec("launcher.backends.file:FileBackend", None),
    "env": Spec("launcher.backends.env:EnvBackend", None),
}


@dataclass(frozen=True)
class Secret:
    """What a reference resolved to: the bytes and, where the backend says, which version."""

    value: bytes = field(repr=False)  # never in a repr: reprs end up in tracebacks and logs
    version: str | None = None  # the backend's identifier of the version read
    created: float | None = None  # when that version was created (epoch seconds), if known


class Backend:
    """What every backend is: built from the environment and the run's deadline, then asked to
    check each reference's shape and to fetch them all at once."""

    name: ClassVar[str]

    def __init__(self, environ: Mapping[str, str], deadline: Deadline) -> None:
        self.environ = environ
        self.deadline = deadline
        # Whether a credential came from $CREDENTIALS_DIRECTORY: then the server's environment
        # loses CREDENTIALS_DIRECTORY too, so it is not pointed at the vault's keys.
        self.credentials_used = False

    def check(self, ref: Ref) -> None:
        """Raise BadReference if `ref` cannot name a secret of this backend."""

    def fetch(self, refs: Sequence[Ref]) -> Mapping[Ref, Secret]:
        """Every reference's value, or raise (Failures listing each miss); batches itself."""
        raise NotImplementedError

    def consumed_env(self) -> Collection[str]:
        """Variables this run read secrets from, scrubbed before exec beyond the registry's."""
        return ("CREDENTIALS_DIRECTORY",) if self.credentials_used else ()

    def credential(self, variable: str) -> str | None:
        """A credential from the environment, else from systemd's $CREDENTIALS_DIRECTORY
        (VAULT_TOKEN -> vault-token), so units need no secret in Environment=."""
        value = self.environ.get(variable)
        if value:
            return value
        directory = self.environ.get("CREDENTIALS_DIRECTORY")
        if not directory:
            return None
        name = variable.lower().replace("_", "-")
        found = read_credential(
            os.path.join(directory, name), f"{variable} from $CREDENTIALS_DIRECTORY/{name}"
        )
        if found is not None:
            self.credentials_used = True
        return found


def reject_field(ref: Ref) -> None:
    """For backends where '#field' means nothing."""
    if ref.field is not None:
        raise BadReference("this backend takes no '#field'", ref=ref.text)


def reject_version(ref: Ref, why: str) -> None:
    """For backends that cannot pin: `why` says what names the version instead, if anything."""
    if ref.version is not None:
        raise BadReference(f"this backend takes no '?version=': {why}", ref=ref.text)


def reject_port(ref: Ref) -> None:
    """For backends whose first component is a name, not a host."""
    if ref.port is not None or ref.host.startswith("["):
        raise BadReference("this backend takes no host or port", ref=ref.text)


def secret_env() -> set[str]:
    """Every backend's credential variables."""
    return {variable for entry in REGISTRY.values() for variable in entry.secret_env}


def spec(name: str) -> Spec:
    """The registry entry for `name`, or UsageError (2) naming the choices."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise UsageError(
            f"unknown backend {name!r}; choose one of: {', '.join(REGISTRY)}"
        ) from None


def load(name: str) -> type[Backend]:
    """The backend class for `name`, importing its module (and SDK) now."""
    entry = spec(name)
    module_name, class_name = entry.target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name == module_name:
            raise NotConfigured(
                f"backend {name} is not available in this version of kms-launch"
            ) from None
        raise NotConfigured(
            f"backend {name} needs the Python package {error.name!r}: "
            f"pip install 'kms-launch[{entry.extra}]'"
        ) from None
    backend: type[Backend] = getattr(module, class_name)
    return backend


__all__ = [
    "Backend",
    "Secret",
    "Spec",
    "load",
    "reject_field",
    "reject_port",
    "reject_version",
    "secret_env",
    "spec",
]
