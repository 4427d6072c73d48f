"""The error hierarchy: one root, a subclass per failure kind, each carrying its exit code."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Self

# sysexits(3) codes, so systemd's RestartPreventExitStatus= can tell permanent from transient.
EX_USAGE = 2
EX_DRIFT = 3  # not sysexits: --check --against found a newer version or another config
EX_DATAERR = 65
EX_NOINPUT = 66
EX_UNAVAILABLE = 69
EX_OSERR = 71
EX_IOERR = 74
EX_NOPERM = 77
EX_CONFIG = 78
EX_NOEXEC = 126
EX_NOTFOUND = 127

# When several failures differ, the most permanent one decides the exit code: a restart loop
# must stop on a bad credential even if the same run also saw a flaky connection.
_PERMANENCE = (EX_CONFIG, EX_NOPERM, EX_DATAERR, EX_UNAVAILABLE)


class LaunchError(Exception):
    """Root of every failure kms-launch reports; never carries a secret value."""

    exit_code: int = 1

    def __init__(self, message: str, *, ref: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.ref = ref  # the reference as written in the config, when the failure has one
        self.key_path: str | None = None  # where in the config, once known

    def at(self, key_path: str) -> Self:
        """This error, located at a TOML key path."""
        self.key_path = key_path
        return self

    def line(self) -> str:
        """The one-line report: `kms-launch: <key.path>: <reference>: <what went wrong>`."""
        return ": ".join(
            part for part in ("kms-launch", self.key_path, self.ref, self.message) if part
        )


class Drifted(LaunchError):
    """--check --against: a secret's version or the config changed since the recorded run."""

    exit_code = EX_DRIFT


class UsageError(LaunchError):
    """Bad command line: unknown backend, conflicting options."""

    exit_code = EX_USAGE


class ConfigUnreadable(LaunchError):
    """The config file is missing, unreadable or not a regular file."""

    exit_code = EX_NOINPUT


class InvalidConfig(LaunchError):
    """The config is not UTF-8 TOML of a sane size."""

    exit_code = EX_DATAERR


class BadReference(LaunchError):
    """A secret:// reference is malformed, or malformed for the chosen backend."""

    exit_code = EX_DATAERR


class SecretNotFound(LaunchError):
    """The backend answered, and the referenced secret or field does not exist."""

    exit_code = EX_DATAERR


class BadSecretValue(LaunchError):
    """The secret exists but cannot be used as asked (not a string, not UTF-8, bad base64)."""

    exit_code = EX_DATAERR


class BackendUnavailable(LaunchError):
    """The backend could not be reached or kept failing until the deadline passed."""

    exit_code = EX_UNAVAILABLE

    def __init__(
        self,
        message: str,
        *,
        ref: str | None = None,
        retry_after: float | None = None,
        answered: bool = True,
    ) -> None:
        super().__init__(message, ref=ref)
        self.retry_after = retry_after  # seconds the server asked us to wait, if it said
        # Whether the backend itself said this (an HTTP status, a throttling code), as opposed
        # to a connection that failed or an attempt cut short: the report prefers what it said.
        self.answered = answered


class BackendFailed(LaunchError):
    """The backend cannot be used and retrying will not change that (an untrusted certificate,
    an answer that is not the service's): 69 at once, never retried."""

    exit_code = EX_UNAVAILABLE


class AccessDenied(LaunchError):
    """The backend refused the credentials or the permission."""

    exit_code = EX_NOPERM


class NotConfigured(LaunchError):
    """No backend chosen, credentials missing, or the backend's extra is not installed."""

    exit_code = EX_CONFIG


class OutOfResources(LaunchError):
    """The system refused a resource the hand-over needs (file descriptors, memory for a memfd)."""

    exit_code = EX_OSERR


class OutputFailed(LaunchError):
    """A report could not be written (a closed pipe, a full disk)."""

    exit_code = EX_IOERR


class CommandNotExecutable(LaunchError):
    """The server command exists but cannot be executed."""

    exit_code = EX_NOEXEC


class CommandNotFound(LaunchError):
    """The server command is not on PATH."""

    exit_code = EX_NOTFOUND


class Failures(LaunchError):
    """Several failures reported together; the exit code is the most permanent among them."""

    def __init__(
        self, errors: Iterable[LaunchError], resolved: Mapping[Any, Any] | None = None
    ) -> None:
        # What did resolve, so --check can still report those references as ok.
        self.resolved: Mapping[Any, Any] = resolved or {}  # Ref -> Secret
        self.errors: list[LaunchError] = []
        for error in errors:
            self.errors.extend(error.errors if isinstance(error, Failures) else [error])
        super().__init__("; ".join(error.message for error in self.errors))
        self.exit_code = most_permanent(error.exit_code for error in self.errors)


def most_permanent(codes: Iterable[int]) -> int:
    """The exit code that should win among several failures' codes."""
    present = set(codes)
    for code in _PERMANENCE:
        if code in present:
            return code
    return min(present, default=1)
