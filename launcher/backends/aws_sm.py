"""The `aws-sm` backend: AWS Secrets Manager secrets, twenty per BatchGetSecretValue call."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

import boto3

from launcher.backends import Secret
from launcher.backends._aws import AwsBackend, Codes, PermissionDenied, classify, deliver_each
from launcher.backends._json import json_field
from launcher.deadline import concurrently
from launcher.errors import (
    BackendFailed,
    BackendUnavailable,
    BadReference,
    BadSecretValue,
    Failures,
    LaunchError,
    SecretNotFound,
)
from launcher.refs import FILE, Ref

BATCH = 20  # BatchGetSecretValue's limit for SecretIdList
CURRENT = "AWSCURRENT"  # the stage read when no version is pinned
FORM = "secret://<region>/<secret-id>[?version=<stage or version id>][#<json-key>]"
# A secret name: letters, digits and /_+=.@- (AWS's alphabet), up to 512 characters; and '!',
# which only AWS itself uses: RDS names the secrets it manages `rds!db-<uuid>`.
_NAME = re.compile(r"[A-Za-z0-9/_+=.@!-]{1,512}")
# A full or partial ARN; its region must be the reference's.
_ARN = re.compile(
    r"arn:aws[a-z-]*:secretsmanager:(?P<region>[a-z0-9-]+):[0-9]{12}:secret:[A-Za-z0-9/_+=.@!-]{1,512}"
)
# VersionIds are UUIDs (what AWS generates; a client token chosen at creation is 32-64 chars,
# but in practice also a UUID): a pin of that form is a VersionId, anything else a stage label.
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_STAGE = re.compile(r"[\x21-\x7e]{1,256}")


@dataclass(frozen=True)
class Key:
    """One version of one secret: what a request asks for, however many references read it."""

    region: str
    secret_id: str
    pin: str | None  # a VersionId or a stage other than AWSCURRENT; None: AWSCURRENT

    @property
    def shown(self) -> str:
        return self.secret_id if self.pin is None else f"{self.secret_id} (version {self.pin})"


@dataclass(frozen=True)
class Version:
    """A secret version as Secrets Manager answered it: text or bytes."""

    string: str | None
    binary: bytes | None
    version: str | None
    created: float | None


Outcome = Version | LaunchError


class SecretsManagerBackend(AwsBackend):
    """secret://<region>/<secret-id> is that secret's current SecretString; ?version= pins a
    stage or version id, #key reads one key of a JSON SecretString."""

    name: ClassVar[str] = "aws-sm"
    service: ClassVar[str] = "secretsmanager"
    label: ClassVar[str] = "Secrets Manager"
    endpoint_variable: ClassVar[str] = "AWS_ENDPOINT_URL_SECRETS_MANAGER"
    codes: ClassVar[Codes] = {
        "DecryptionFailure": lambda where, code: BadSecretValue(
            f"{where} cannot decrypt the secret with its KMS key ({code})"
        ),
        "InvalidParameterException": lambda where, code: BadReference(
            f"{where} rejected the secret id or version ({code})"
        ),
        "ValidationException": lambda where, code: BadReference(
            f"{where} rejected the secret id or version ({code})"
        ),
    }

    def check(self, ref: Ref) -> None:
        self.check_region(ref, FORM)
        secret_id = _secret_id(ref)
        arn = _ARN.fullmatch(secret_id)
        if arn is not None:
            if arn.group("region") != ref.host:
                raise BadReference(
                    f"the ARN is in {arn.group('region')}, the reference in {ref.host}",
                    ref=ref.text,
                )
        elif secret_id.startswith("arn:") or not _NAME.fullmatch(secret_id):
            raise BadReference(
                "not a secret name (up to 512 of letters, digits and /_+=.@!-, '@' as %40, '!' as %21)"
                " nor a Secrets Manager ARN (its ':' as %3A)",
                ref=ref.text,
            )
        if ref.version is not None and not _STAGE.fullmatch(ref.version):
            raise BadReference(
                "?version= takes a version id (a UUID) or a stage label (AWSCURRENT,"
                " AWSPREVIOUS or your own)",
                ref=ref.text,
            )

    def fetch(self, refs: Sequence[Ref]) -> Mapping[Ref, Secret]:
        wanted: dict[Key, list[Ref]] = {}
        for ref in refs:
            pin = None if ref.version == CURRENT else ref.version
            wanted.setdefault(Key(ref.host, _secret_id(ref), pin), []).append(ref)
        try:
            session = self._open_session()
        except LaunchError as error:  # backend-wide: no credentials, unknown profile
            raise Failures([error]) from None

        def work(item: tuple[Key, ...]) -> dict[Key, Outcome]:
            if item[0].pin is None:
                return self._batch(session, item)
            return {item[0]: self._one(session, item[0])}

        outcomes, _ = concurrently(work, _calls(wanted))
        found = {key: outcome for answers in outcomes.values() for key, outcome in answers.items()}
        return deliver_each(wanted, lambda key, ref: _deliverable(found[key], ref, key))

    def _batch(self, session: boto3.Session, keys: tuple[Key, ...]) -> dict[Key, Outcome]:
        """The current version of up to twenty secrets of one region in one call. Secrets the
        answer leaves out, or lists with a transient error, are asked for one by one; so are
        all of them if a policy allows GetSecretValue but not BatchGetSecretValue."""
        region = keys[0].region
        where = f"{self.label} in {region}"
        try:
            answer = self._call(
                session, region, "batch_get_secret_value", SecretIdList=[k.secret_id for k in keys]
            )
        except PermissionDenied:
            return self._each(session, keys)
        except LaunchError as error:
            return dict.fromkeys(keys, error)
        results: dict[Key, Outcome] = {}
        entries = answer.get("SecretValues")
        for entry in entries if isinstance(entries, list) else []:
            for key in keys:
                if key not in results and isinstance(entry, dict) and _names(entry, key.secret_id):
                    results[key] = _version(entry)
                    break
        errors = answer.get("Errors")
        for entry in errors if isinstance(errors, list) else []:
            if not isinstance(entry, dict):
                continue
            for key in keys:
                if key not in results and entry.get("SecretId") == key.secret_id:
                    failed = _not_found(str(entry.get("ErrorCode", "")), where, key)
                    if not isinstance(failed, BackendUnavailable | PermissionDenied):
                        results[key] = failed
                    break
        results.update(self._each(session, [key for key in keys if key not in results]))
        return results

    def _each(self, session: boto3.Session, keys: Sequence[Key]) -> dict[Key, Outcome]:
        """GetSecretValue for each key, concurrently."""
        outcomes, _ = concurrently(lambda key: self._one(session, key), keys)
        return outcomes

    def _one(self, session: boto3.Session, key: Key) -> Outcome:
        """One secret version with GetSecretValue."""
        where = f"{self.label} in {key.region}"
        selector: dict[str, str] = {}
        if key.pin is not None:
            selector = {"VersionId" if _UUID.fullmatch(key.pin) else "VersionStage": key.pin}
        codes: Codes = {
            "ResourceNotFoundException": lambda where, code: _not_found(code, where, key),
            "InvalidRequestException": lambda where, code: _not_found(code, where, key),
        }
        try:
            answer = self._call(
                session, key.region, "get_secret_value", codes, SecretId=key.secret_id, **selector
            )
        except LaunchError as error:
            return error
        if not _names(answer, key.secret_id):
            return BackendFailed(f"{where} answered without naming {key.shown}: not its answer")
        return _version(answer)


def _secret_id(ref: Ref) -> str:
    """A name (`prod/kms/db`) or an ARN, its path segments joined by '/'."""
    return "/".join(ref.path)


def _calls(wanted: Mapping[Key, object]) -> list[tuple[Key, ...]]:
    """Current versions twenty per call and region; each pinned version a call of its own
    (BatchGetSecretValue reads only AWSCURRENT)."""
    current: dict[str, list[Key]] = {}
    calls: list[tuple[Key, ...]] = []
    for key in wanted:
        if key.pin is None:
            current.setdefault(key.region, []).append(key)
        else:
            calls.append((key,))
    for keys in current.values():
        calls.extend(tuple(keys[i : i + BATCH]) for i in range(0, len(keys), BATCH))
    return calls


def _names(entry: Mapping[str, Any], secret_id: str) -> bool:
    """Whether an answer is about `secret_id`: its name, its ARN, or a partial ARN (one
    without the six random characters AWS appends)."""
    name, arn = entry.get("Name"), entry.get("ARN")
    if secret_id in (name, arn):
        return True
    return (
        isinstance(arn, str) and arn.startswith(secret_id + "-") and len(arn) == len(secret_id) + 7
    )


def _not_found(code: str, where: str, key: Key) -> LaunchError:
    if code == "ResourceNotFoundException":
        what = "no secret" if key.pin is None else "no version"
        return SecretNotFound(f"{where}: {what} {key.shown}")
    if code == "InvalidRequestException":  # e.g. scheduled for deletion
        return SecretNotFound(f"{where} cannot read {key.shown} now ({code}): is it deleted?")
    return classify(code, 0, where, SecretsManagerBackend.codes)


def _version(entry: Mapping[str, Any]) -> Version:
    string, binary = entry.get("SecretString"), entry.get("SecretBinary")
    version, created = entry.get("VersionId"), entry.get("CreatedDate")
    return Version(
        string if isinstance(string, str) else None,
        binary if isinstance(binary, bytes) else None,
        version if isinstance(version, str) else None,
        created.timestamp() if isinstance(created, datetime) else None,
    )


def _deliverable(outcome: Outcome, ref: Ref, key: Key) -> Secret:
    """The bytes `ref` asks for: the SecretString, a key of it, or (for secret+file://) the
    SecretBinary. Raises the outcome's error, or why the version cannot be used so."""
    if isinstance(outcome, LaunchError):
        raise outcome
    where = f"secret {key.shown} in {key.region}"
    if outcome.string is not None:
        value = outcome.string.encode("utf-8")
        if ref.field is not None:
            value = json_field(value, ref.field, ref=ref.text, where=where)
        return Secret(value, outcome.version, outcome.created)
    if outcome.binary is None:
        raise BadSecretValue(f"{where} has neither a SecretString nor a SecretBinary")
    if ref.field is not None:
        raise BadSecretValue(f"{where} is binary (SecretBinary): it has no JSON keys")
    if ref.scheme != FILE:
        raise BadSecretValue(
            f"{where} is binary (SecretBinary): deliver it with secret+file:// (bytes as"
            " they are, no base64)"
        )
    return Secret(outcome.binary, outcome.version, outcome.created)
