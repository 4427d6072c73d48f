"""The command line: options in, one pass through the pipeline, errors out as exit codes."""

from __future__ import annotations

import contextlib
import copy
import hashlib
import logging
import math
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, NoReturn, TypeVar

import typer
from tomlkit.toml_document import TOMLDocument

from launcher import backends, config, deadline, launch, record, refs, resolve
from launcher.backends import Secret
from launcher.errors import (
    EX_USAGE,
    BackendUnavailable,
    Drifted,
    Failures,
    LaunchError,
    NotConfigured,
    OutputFailed,
    UsageError,
)
from launcher.refs import Ref

EX_SOFTWARE = 70  # a bug in kms-launch itself
NOTICE = 25  # between INFO and WARNING: the launch record's line, shown unless -q
T = TypeVar("T")
log = logging.getLogger("kms-launch")


@dataclass(frozen=True)
class Options:
    """Everything the command line and its environment variables decided."""

    config_path: str
    command: list[str]
    backend: str | None = None
    check: bool = False
    timeout: float = 30.0
    keep_env: list[str] = field(default_factory=list)
    record: str | None = None  # --record PATH
    against: str | None = None  # --check --against PATH
    settle: float = 0.0  # --check --settle SECONDS
    json: bool = False  # --check --json


def run(options: Options, environ: Mapping[str, str]) -> None:
    """The pipeline, top to bottom. Execs the server and never returns, unless in check mode."""
    launch.make_non_dumpable()
    launch.exit_on_termination_signals()
    clock = deadline.Deadline(options.timeout)
    local = _local_checks(options, environ)
    occurrences = local.occurrences
    wanted = [span.ref for occurrence in occurrences for span in occurrence.spans]
    log.info(
        "%s: %d references (%d distinct) in %d values",
        options.config_path,
        len(wanted),
        len(set(wanted)),
        len(occurrences),
    )

    key_paths = _key_paths(occurrences)
    backend: backends.Backend | None = None
    values: dict[Ref, Secret] = {}
    try:
        if wanted:
            backend, values = deadline.within(
                clock,
                lambda: _resolve(options.backend, wanted, environ, clock),
                lambda: _too_late(options.backend, wanted, clock),
            )
            log.info(
                "resolved %d references from %s in %.3fs",
                len(values),
                backend.name,
                clock.elapsed(),
            )
            for occurrence in occurrences if log.isEnabledFor(logging.INFO) else ():
                for span in occurrence.spans:
                    log.info(
                        "  %s: %s (%d bytes)",
                        occurrence.key_path,
                        span.ref,
                        len(values[span.ref].value),
                    )
        # A secret file's memfd is named after the first key that uses it, never its content.
        replacements = launch.deliver(
            {ref: secret.value for ref, secret in values.items()},
            {ref: key_paths[ref.text][0] for ref in values},
        )
    except LaunchError as caught:  # opening the backend raises one error, resolving Failures
        failures = _per_reference(
            caught if isinstance(caught, Failures) else Failures([caught]), wanted
        )
        if options.check:
            _print_check(occurrences, {**failures.resolved, **values}, failures)
        raise _located(failures, key_paths) from None
    used = record.build(
        config_path=options.config_path,
        config_sha256=local.config_sha256,
        backend=backend.name if backend else options.backend,
        key_paths=key_paths,
        resolved=[
            (ref.text, secret.version, secret.created, len(secret.value))
            for ref, secret in values.items()
        ],
    )
    if options.check:
        if options.json:
            import json  # only for --check --json: off the launch path

            _write(json.dumps(used.to_json(), indent=2) + "\n")
        else:
            _print_check(occurrences, values, None)
        _keep_record(used, options.record)
        if options.against is not None:
            _compare(record.load(options.against), used, options.settle)
        return

    _keep_record(used, options.record or _default_record_path(environ))
    config.substitute(occurrences, replacements)
    config_path = launch.sealed_memfd("kms.toml", config.dump(local.document))
    server_environ = launch.scrub_environment(
        environ,
        {
            "KMS_SECRET_BACKEND",
            *backends.secret_env(),
            *(backend.consumed_env() if backend else ()),
        },
        options.keep_env,
    )
    log.info(
        "removed from the server's environment: %s",
        ", ".join(sorted(set(environ) - set(server_environ))) or "nothing",
    )
    log.info("exec %s with config %s", local.executable, config_path)
    launch.exec_server(
        local.executable, launch.server_argv(local.argv, config_path), server_environ
    )


def _keep_record(used: record.Record, path: str | None) -> None:
    """The record as one line on stderr (the journal keeps it), and as JSON at `path`."""
    log.log(NOTICE, "launch record: %s", used.summary())
    if path is not None:
        record.write(used, path)


def _default_record_path(environ: Mapping[str, str]) -> str | None:
    """$RUNTIME_DIRECTORY/launch.json when systemd provides that directory (the first one if
    RuntimeDirectory= names several)."""
    directories = environ.get("RUNTIME_DIRECTORY", "")
    first = directories.split(":", 1)[0]
    return os.path.join(first, "launch.json") if first else None


def _compare(recorded: record.Record, now: record.Record, settle: float) -> None:
    """Report what changed since `recorded` on stderr; Drifted (exit 3) if anything counts."""
    found = record.drift(recorded, now, settle)
    for change in found.changes:
        log.log(NOTICE, "changed: %s", change.line())
    for change in found.settling:
        log.log(NOTICE, "settling (younger than --settle %gs): %s", settle, change.line())
    if found.changes:
        raise Drifted(
            f"{len(found.changes)} change{'s' * (len(found.changes) > 1)} since the run"
            f" recorded at {record.stamp(recorded.time)}"
        )


@dataclass(frozen=True)
class Local:
    """What the local checks found: the server's command, and the config read and parsed."""

    executable: str
    argv: list[str]
    document: TOMLDocument
    occurrences: list[config.Occurrence]
    config_sha256: str


def _local_checks(options: Options, environ: Mapping[str, str]) -> Local:
    """Everything that needs no backend, before anything remote, its failures reported together:
    a typo in the backend name, a missing config and a command not on PATH cost no vault
    request, and a newcomer sees all of them at once rather than one per try."""
    failures: list[LaunchError] = []

    def step(action: Callable[[], T], fallback: T) -> T:
        try:
            return action()
        except LaunchError as error:
            failures.append(error)
            return fallback

    if options.backend is not None:
        step(lambda: backends.spec(options.backend or ""), None)
    no_command: tuple[str, list[str]] = ("", [])
    executable, argv = (
        no_command
        if options.check
        else step(lambda: launch.find_command(options.command, environ), no_command)
    )
    data = step(lambda: config.read(options.config_path), b"")
    document = (
        step(
            lambda: config.parse(config.decode(data, options.config_path), options.config_path),
            None,
        )
        if data
        else None
    )
    no_occurrences: list[config.Occurrence] = []
    occurrences = (
        step(lambda: config.find_references(document), no_occurrences)
        if document is not None
        else no_occurrences
    )
    if occurrences and options.backend is None:
        count = sum(len(occurrence.spans) for occurrence in occurrences)
        failures.append(
            NotConfigured(
                f"the config holds {count} secret:// references but no backend is chosen:"
                " pass --backend or set KMS_SECRET_BACKEND"
            )
        )
    if failures or document is None:
        raise Failures(failures)
    return Local(executable, argv, document, occurrences, hashlib.sha256(data).hexdigest())


def _resolve(
    name: str | None, wanted: Sequence[Ref], environ: Mapping[str, str], clock: deadline.Deadline
) -> tuple[backends.Backend, dict[Ref, Secret]]:
    """Open the chosen backend (importing its SDK) and resolve every reference with it."""
    backend = backends.load(name or "")(environ, clock)
    return backend, resolve.resolve(backend, wanted)


def _too_late(name: str | None, wanted: Sequence[Ref], clock: deadline.Deadline) -> Failures:
    """What is reported when resolution is still running at the deadline: each reference, and
    what the backend last answered if it answered anything (an attempt may have been retrying
    an HTTP 500 when the deadline cut it off)."""
    answered = deadline.latest_answer()
    why = f"no answer from the {name} backend within the {clock.seconds:g}s deadline"
    if answered is not None:
        why = f"{answered.message}; then {why}"
    return Failures(
        BackendUnavailable(why, ref=ref.text, answered=answered is not None)
        for ref in dict.fromkeys(wanted)
    )


def _key_paths(occurrences: Sequence[config.Occurrence]) -> dict[str, list[str]]:
    """Each reference (as written) and the keys that use it, in document order."""
    places: dict[str, dict[str, None]] = {}
    for occurrence in occurrences:
        for span in occurrence.spans:
            places.setdefault(span.ref.text, {})[occurrence.key_path] = None
    return {ref: list(keys) for ref, keys in places.items()}


def _per_reference(failures: Failures, wanted: Sequence[Ref]) -> Failures:
    """A failure of the whole backend (no credentials, a login refused, a token endpoint that
    misbehaves) stops every reference: report it for each, so every line names one."""
    references = list(dict.fromkeys(ref.text for ref in wanted))
    errors: list[LaunchError] = []
    for error in failures.errors:
        if error.ref is None and error.key_path is None:
            errors.extend(_with_ref(error, ref) for ref in references)
        else:
            errors.append(error)
    return Failures(errors, resolved=failures.resolved)


def _with_ref(error: LaunchError, ref: str) -> LaunchError:
    located = copy.copy(error)
    located.ref = ref
    return located


def _located(failures: Failures, key_paths: Mapping[str, list[str]]) -> Failures:
    """One error per place a failed reference is used, so each report line names its key."""
    located: list[LaunchError] = []
    for error in failures.errors:
        places = key_paths.get(error.ref or "", []) if not error.key_path else []
        located.extend([copy.copy(error).at(place) for place in places] or [error])
    return Failures(located)


def _print_check(
    occurrences: Sequence[config.Occurrence],
    values: Mapping[Ref, Secret],
    failures: Failures | None,
) -> None:
    """One line per reference: key path, reference, status, value length. Never the value."""
    reasons = {error.ref: error.message for error in (failures.errors if failures else [])}
    for occurrence in occurrences:
        for span in occurrence.spans:
            ref = span.ref
            if ref.text in reasons:
                status = f"error\t{reasons[ref.text]}"
            elif ref in values:
                secret = values[ref]
                shown = "" if secret.version is None else f"\tversion {secret.version}"
                status = f"ok\t{len(secret.value)} bytes{shown}"
            else:
                status = "error\tnot resolved: another failure stopped the run"
            _write(f"{occurrence.key_path}\t{ref.text}\t{status}\n")
        _warn_unsafe_in_url(occurrence, values)


def _warn_unsafe_in_url(occurrence: config.Occurrence, values: Mapping[Ref, Secret]) -> None:
    """Warn when a plain secret:// value inside a URL's authority would break that URL. Names
    the key and the reference only: never the value, nor which characters are at fault."""
    for index, span in enumerate(occurrence.spans):
        secret = values.get(span.ref)
        if span.ref.scheme != refs.VALUE or secret is None:
            continue
        part = refs.authority_part(occurrence.original, occurrence.spans, index)
        try:
            text = secret.value.decode("utf-8")
        except UnicodeDecodeError:
            continue  # already reported as an error: not UTF-8 text
        if part is not None and refs.breaks_authority(text, part):
            log.warning(
                "warning: %s: %s: the value holds characters that would break the URL's %s;"
                " write secret+url://%s to substitute it percent-encoded",
                occurrence.key_path,
                span.ref.text,
                part,
                span.ref.text.split("://", 1)[1],
            )


def _log_to_stderr(level: int) -> None:
    """Our own lines on stderr, and nothing of any SDK's: botocore, urllib3 and msal log warnings
    with tracebacks and answers that may quote a response body or a credential. The root logger
    gets a NullHandler so that logging's last-resort handler prints none of them either."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("kms-launch: %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.NullHandler())


def _finite(value: float) -> float:
    # click's range check lets NaN (every comparison is false) and infinity through.
    if not math.isfinite(value):
        raise typer.BadParameter(f"{value} is not a finite number of seconds")
    return value


def _write(text: str) -> None:
    """Write to stdout; a closed pipe or a full disk is a reported failure, not a traceback."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except OSError as error:
        raise OutputFailed(
            f"cannot write to standard output: {error.strerror or type(error).__name__}"
        ) from None


def _show_version(value: bool) -> None:
    if value:
        from importlib.metadata import version  # 24 ms: only for --version, off the launch path

        print(f"kms-launch {version('kms-launch')}")
        raise typer.Exit()


app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.command(
    context_settings={"allow_interspersed_args": False, "help_option_names": ["-h", "--help"]},
    help="Resolve the secret:// references in a config and exec the server with the result in a "
    "sealed memfd. The command after -- defaults to cosmian_kms; an argument containing {config} "
    "gets the config path, otherwise -c /proc/self/fd/N is appended.",
)
def main(
    config_path: Annotated[
        str,
        typer.Option(
            "-c", "--config", metavar="PATH", help="TOML config with secret:// references."
        ),
    ],
    command: Annotated[
        list[str] | None, typer.Argument(metavar="[-- COMMAND [ARG]...]", show_default=False)
    ] = None,
    backend: Annotated[
        str | None,
        typer.Option(
            "--backend",
            envvar="KMS_SECRET_BACKEND",
            metavar="NAME",
            help=f"Secret backend: {', '.join(backends.REGISTRY)}.",
        ),
    ] = None,
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="Resolve everything, print one line per reference (never a value), exec nothing.",
        ),
    ] = False,
    timeout: Annotated[
        float,
        typer.Option(
            "--timeout",
            envvar="KMS_LAUNCH_TIMEOUT",
            min=0.1,
            callback=_finite,
            metavar="SECONDS",
            help="Deadline for the whole run, counted from start: retries and every backend request included.",
        ),
    ] = 30.0,
    keep_env: Annotated[
        list[str] | None,
        typer.Option(
            "--keep-env",
            metavar="NAME",
            help="Keep this credential variable in the server's environment (repeatable).",
        ),
    ] = None,
    record_path: Annotated[
        str | None,
        typer.Option(
            "--record",
            metavar="PATH",
            help="Write the launch record (versions, never values) as JSON to PATH, atomically."
            " Default for a launch: $RUNTIME_DIRECTORY/launch.json when systemd sets it.",
        ),
    ] = None,
    against: Annotated[
        str | None,
        typer.Option(
            "--against",
            metavar="PATH",
            help="With --check: compare with a launch record; exit 3 if a version or the config"
            " changed.",
        ),
    ] = None,
    settle: Annotated[
        float,
        typer.Option(
            "--settle",
            min=0,
            callback=_finite,
            metavar="SECONDS",
            help="With --against: a version younger than this does not count yet.",
        ),
    ] = 0.0,
    json_output: Annotated[
        bool,
        typer.Option("--json", help="With --check: print the launch record as JSON on stdout."),
    ] = False,
    verbose: Annotated[
        bool,
        typer.Option(
            "-v", "--verbose", help="Log each step and reference (never values) to stderr."
        ),
    ] = False,
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="Print only errors.")] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_show_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    if verbose and quiet:
        raise UsageError("-v and -q exclude each other")
    _log_to_stderr(logging.INFO if verbose else logging.ERROR if quiet else NOTICE)
    if not check and (against is not None or json_output or settle):
        raise UsageError("--against, --settle and --json go with --check")
    options = Options(
        config_path,
        command or [],
        backend,
        check,
        timeout,
        keep_env or [],
        record=record_path,
        against=against,
        settle=settle,
        json=json_output,
    )
    run(options, dict(os.environ))


def cli(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code (only reached when nothing was exec'd)."""
    command = typer.main.get_command(app)
    try:
        command.main(args=argv, prog_name="kms-launch", standalone_mode=False)
    except LaunchError as error:
        failures = error.errors if isinstance(error, Failures) else [error]
        for failure in failures:
            print(failure.line(), file=sys.stderr)
        return error.exit_code
    except typer.Exit as exit_:
        return exit_.exit_code
    except typer.TyperException as error:  # bad usage, as typer reports it
        show = getattr(error, "show", None)
        if show is not None:
            show()
        else:
            print(f"kms-launch: {error.format_message()}", file=sys.stderr)
        return EX_USAGE
    except typer.Abort:
        return 130
    except Exception as error:
        # The message of an unexpected exception may quote a response body holding a secret:
        # print only its type.
        print(
            f"kms-launch: internal error ({type(error).__name__}); please report it",
            file=sys.stderr,
        )
        return EX_SOFTWARE
    return 0


def exec_app() -> NoReturn:
    """Console-script entry point. Exits with os._exit once the report is written: a backend's
    SDK stuck on a daemon thread, or its exit hooks, must not hold the exit past the deadline."""
    code = cli()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing more to say
            stream.flush()
    os._exit(code)
