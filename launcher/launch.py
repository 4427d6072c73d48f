"""The hand-over: secrets into sealed memfds, credential scrub, server argv, and execve."""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import shutil
import signal
from collections.abc import Collection, Mapping, Sequence
from typing import NoReturn

from launcher.errors import (
    BadSecretValue,
    CommandNotExecutable,
    CommandNotFound,
    Failures,
    LaunchError,
    OutOfResources,
)
from launcher.refs import FILE, FILE_BASE64, URL, Ref

DEFAULT_COMMAND = "cosmian_kms"
CONFIG_PLACEHOLDER = "{config}"
MFD_NOEXEC_SEAL = 0x0008  # Linux 6.3+: the memfd can never be made executable
SEALS = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE
PR_SET_DUMPABLE = 4
MEMFD_NAME_MAX = 249


def make_non_dumpable() -> None:
    """No core dump or ptrace by other users while secrets sit in this process; execve resets it."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE, 0) failed")


def exit_on_termination_signals() -> None:
    """Exit at once on SIGTERM/SIGINT/SIGHUP while resolving. As a container's PID 1 the kernel
    drops signals that have no handler, so `docker stop` would otherwise wait for SIGKILL;
    execve resets these handlers, so the server installs its own."""
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, _exit_on_signal)


def _exit_on_signal(signum: int, _frame: object) -> None:
    # Die by the signal itself, as an unhandled SIGTERM would: systemd counts SIGTERM, SIGINT and
    # SIGHUP deaths as clean, so `systemctl stop` during resolution leaves the unit inactive, not
    # failed (an exit status of 143 is a failure to it), and shells and supervisors see which
    # signal it was. The unit could list 143 in SuccessExitStatus= instead, but then every other
    # supervisor would still be told "exited 143". PID 1 of a PID namespace (a container) is
    # never killed by a signal it has no handler for, so there it exits 128+signum, the status
    # runtimes report for it. os.kill/os._exit, not SystemExit: worker threads may sit in a
    # network call; nothing needs cleanup (no file was written), the memfds vanish with us.
    if os.getpid() != 1:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
    os._exit(128 + signum)


def find_command(command: Sequence[str], environ: Mapping[str, str]) -> tuple[str, list[str]]:
    """(executable path, argv) for the server, or CommandNotFound (127) / CommandNotExecutable (126)."""
    argv = list(command) or [DEFAULT_COMMAND]
    program = argv[0]
    if "/" in program:
        path = program
    else:
        found = shutil.which(program, path=environ.get("PATH", os.defpath))
        if found is None:
            if _on_path_but_not_executable(program, environ.get("PATH", os.defpath)):
                raise CommandNotExecutable(f"command {program!r} is on PATH but not executable")
            raise CommandNotFound(f"command {program!r} not found on PATH")
        path = found
    if not os.path.exists(path):
        raise CommandNotFound(f"command {program!r} not found")
    if os.path.isdir(path) or not os.access(path, os.X_OK):
        raise CommandNotExecutable(f"command {program!r} is not executable")
    return path, argv


def server_argv(argv: Sequence[str], config_path: str) -> list[str]:
    """Put the config path where the command asks for it ({config}), else append `-c PATH`."""
    if any(CONFIG_PLACEHOLDER in arg for arg in argv):
        return [arg.replace(CONFIG_PLACEHOLDER, config_path) for arg in argv]
    return [*argv, "-c", config_path]


def sealed_memfd(name: str, data: bytes) -> str:
    """Write `data` into an anonymous memfd the server inherits, seal it, return its /proc path.
    The system refusing (no file descriptors or memory left) is OutOfResources (71)."""
    label = memfd_name(name)
    try:
        fd = _memfd_create(label)
    except OSError as error:
        raise OutOfResources(f"cannot create a memfd for {name}: {_hint(error)}") from None
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, SEALS)
        os.lseek(fd, 0, os.SEEK_SET)  # a server that reads the inherited fd directly starts at 0
        os.set_inheritable(fd, True)
    except OSError as error:
        os.close(fd)
        raise OutOfResources(f"cannot fill the memfd for {name}: {_hint(error)}") from None
    return f"/proc/self/fd/{fd}"


def memfd_name(name: str) -> str:
    """`name` cut to what memfd_create accepts (249 bytes: the kernel's 255 less "memfd:"),
    at a character boundary. Only a label for /proc/PID/fd links; uniqueness is not needed."""
    encoded = name.replace("\0", "?").encode("utf-8")
    return encoded[:MEMFD_NAME_MAX].decode("utf-8", errors="ignore")


def _memfd_create(name: str) -> int:
    flags = os.MFD_ALLOW_SEALING
    try:
        return os.memfd_create(name, flags | MFD_NOEXEC_SEAL)
    except OSError as error:
        if error.errno != errno.EINVAL:  # kernel older than 6.3: no MFD_NOEXEC_SEAL
            raise
        return os.memfd_create(name, flags)


def _hint(error: OSError) -> str:
    reason = error.strerror or type(error).__name__
    if error.errno in (errno.EMFILE, errno.ENFILE):
        return f"{reason} (raise the open-file limit: LimitNOFILE= or ulimit -n)"
    return reason


def deliver(values: Mapping[Ref, bytes], names: Mapping[Ref, str]) -> dict[Ref, str]:
    """What replaces each reference: its text, or for secret+file:// the path of a sealed memfd
    holding its bytes (named after where it is used, never after its content)."""
    replacements: dict[Ref, str] = {}
    failures: list[LaunchError] = []
    for ref, value in values.items():
        try:
            if ref.scheme == FILE:
                replacements[ref] = sealed_memfd(names[ref], value)
            elif ref.scheme == FILE_BASE64:
                replacements[ref] = sealed_memfd(names[ref], _base64_decode(ref, value))
            elif ref.scheme == URL:
                replacements[ref] = url_encode(_text(ref, value))
            else:
                replacements[ref] = _text(ref, value)
        except LaunchError as error:
            failures.append(error)
    if failures:
        raise Failures(failures)
    return replacements


def url_encode(text: str) -> str:
    """secret+url://: every byte outside RFC 3986's unreserved set (A-Z a-z 0-9 - . _ ~) as %XX
    of its UTF-8. That is valid unchanged in a userinfo, a path segment and a query value, and
    every URL parser decodes it back; leaving any delimiter unencoded would break one of them."""
    from urllib.parse import quote  # only for secret+url://: off the common launch path

    return quote(text, safe="")


def scrub_environment(
    environ: Mapping[str, str], remove: Collection[str], keep: Collection[str]
) -> dict[str, str]:
    """The server's environment: ours without the credential variables, unless kept on purpose."""
    dropped = set(remove) - set(keep)
    return {name: value for name, value in environ.items() if name not in dropped}


def exec_server(path: str, argv: Sequence[str], environ: Mapping[str, str]) -> NoReturn:
    """Replace this process with the server: same PID, inherited memfds, signals go to it."""
    try:
        os.execve(path, list(argv), dict(environ))
    except FileNotFoundError:
        raise CommandNotFound(f"command {argv[0]!r} not found") from None
    except OSError as error:
        raise CommandNotExecutable(f"cannot execute {argv[0]!r}: {error.strerror}") from None


def _text(ref: Ref, value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise BadSecretValue(
            "the secret is not UTF-8 text; deliver bytes with secret+file:// instead", ref=ref.text
        ) from None


def _base64_decode(ref: Ref, value: bytes) -> bytes:
    import base64  # rarely needed: off the common launch path
    import binascii

    try:
        # Line-wrapped base64 (as `base64` and PEM bodies write it) is common: drop whitespace.
        return base64.b64decode(b"".join(value.split()), validate=True)
    except (binascii.Error, ValueError):
        raise BadSecretValue("the secret is not valid base64", ref=ref.text) from None


def _on_path_but_not_executable(program: str, search_path: str) -> bool:
    return any(
        os.path.isfile(os.path.join(directory, program))
        for directory in search_path.split(os.pathsep)
        if directory
    )
