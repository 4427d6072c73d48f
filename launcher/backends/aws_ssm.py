"""The `aws-ssm` backend: SSM Parameter Store parameters, decrypted, ten names per GetParameters."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, ClassVar

import boto3

from launcher.backends import Secret, reject_port
from launcher.backends._aws import REGION as _REGION
from launcher.backends._aws import AwsBackend, Codes, deliver_each
from launcher.backends._json import json_field
from launcher.deadline import concurrently
from launcher.errors import (
    BadReference,
    BadSecretValue,
    Failures,
    LaunchError,
    SecretNotFound,
)
from launcher.refs import Ref

BATCH = 10  # GetParameters' limit: 11 names is a ValidationException
# AWS's parameter-name alphabet; `name:version` / `name:label` selectors come as %3A.
_NAME = re.compile(r"(/[A-Za-z0-9_.-]+)+(:[A-Za-z0-9_.-]+)?")
_MAX_NAME = 2048
_MAX_DEPTH = 15
_CODES: Codes = {
    "InvalidKeyId": lambda where, code: BadSecretValue(
        f"{where} cannot decrypt with the parameter's key ({code})"
    ),
    "ValidationException": lambda where, code: BadReference(
        f"{where} rejected the parameter names ({code})"
    ),
}

Batch = tuple[str, tuple[str, ...]]  # (region, parameter names): one GetParameters call


class SsmBackend(AwsBackend):
    """secret://<region>/<name>[?version=<N or label>][#<key>] is parameter /<name> in <region>,
    SecureStrings decrypted; with #<key>, that key of the JSON object it holds."""

    name: ClassVar[str] = "aws-ssm"
    service: ClassVar[str] = "ssm"
    label: ClassVar[str] = "SSM"
    endpoint_variable: ClassVar[str] = "AWS_ENDPOINT_URL_SSM"
    codes: ClassVar[Codes] = _CODES

    def check(self, ref: Ref) -> None:
        reject_port(ref)  # '#field' is a key of a parameter holding a JSON object
        if not ref.path:
            raise BadReference("expected secret://<region>/<name>", ref=ref.text)
        if not _REGION.fullmatch(ref.host):
            raise BadReference(
                f"{ref.host!r} is not an AWS region; expected secret://<region>/<name>",
                ref=ref.text,
            )
        if ref.version is not None and ":" in ref.path[-1]:
            raise BadReference(
                "two version selectors: write ?version=<version or label>, or the older"
                " %3A<version or label>, not both",
                ref=ref.text,
            )
        # Checked here, not left to AWS: one bad name fails its whole batch of ten.
        name = _parameter(ref)
        if not _NAME.fullmatch(name) or len(name) > _MAX_NAME or name.count("/") > _MAX_DEPTH:
            raise BadReference(
                "not an SSM parameter name: up to 15 levels of letters, digits and '_.-',"
                " optionally with ?version=<version or label>",
                ref=ref.text,
            )

    def fetch(self, refs: Sequence[Ref]) -> Mapping[Ref, Secret]:
        wanted: dict[tuple[str, str], list[Ref]] = {}
        for ref in refs:
            wanted.setdefault((ref.host, _parameter(ref)), []).append(ref)
        try:
            session = self._open_session()
        except LaunchError as error:  # backend-wide: no credentials, unknown profile
            raise Failures([error]) from None

        def call(batch: Batch) -> dict[str, Secret | LaunchError]:
            try:
                return self._get_parameters(session, batch)
            except LaunchError as error:
                return dict.fromkeys(batch[1], error)

        outcomes, _ = concurrently(call, _batches(wanted))
        found = {
            (region, name): outcome
            for (region, _names), answers in outcomes.items()
            for name, outcome in answers.items()
        }

        def deliver(key: tuple[str, str], ref: Ref) -> Secret:
            outcome = found[key]
            if isinstance(outcome, LaunchError):
                raise outcome
            return _field(outcome, ref, *key)

        return deliver_each(wanted, deliver)

    def _get_parameters(
        self, session: boto3.Session, batch: Batch
    ) -> dict[str, Secret | LaunchError]:
        region, names = batch
        answer = self._call(
            session, region, "get_parameters", Names=list(names), WithDecryption=True
        )
        results: dict[str, Secret | LaunchError] = {}
        # A batch never holds two names with the same base, so the base identifies the request
        # even for `name:label` (moto leaves out the `Selector` AWS sends back).
        by_base = {name.split(":", 1)[0]: name for name in names}
        for parameter in answer.get("Parameters", []):
            name = by_base.get(parameter.get("Name", ""))
            value = parameter.get("Value")
            if name is None:
                continue
            if isinstance(value, str):
                results[name] = Secret(value.encode("utf-8"), *_version(parameter))
            else:
                results[name] = BadSecretValue(f"SSM returned no value for {name} in {region}")
        for name in names:
            if name not in results:
                results[name] = SecretNotFound(f"no parameter {name} in {region}")
        return results


def _parameter(ref: Ref) -> str:
    """The name GetParameters is asked for: `/<name>`, or `/<name>:<version or label>`."""
    selector = "" if ref.version is None else f":{ref.version}"
    return "/" + "/".join(ref.path) + selector


def _version(parameter: Mapping[str, Any]) -> tuple[str | None, float | None]:
    """(Version, LastModifiedDate): for a label, the version the label points to. A version of
    a parameter is never modified, so its LastModifiedDate is when that version was created."""
    version = parameter.get("Version")
    modified = parameter.get("LastModifiedDate")
    return (
        str(version) if isinstance(version, int) and not isinstance(version, bool) else None,
        modified.timestamp() if isinstance(modified, datetime) else None,
    )


def _field(secret: Secret, ref: Ref, region: str, name: str) -> Secret:
    """The whole parameter, or with '#field' a key of the JSON object it holds."""
    if ref.field is None:
        return secret
    value = json_field(secret.value, ref.field, ref=ref.text, where=f"parameter {name} in {region}")
    return Secret(value, secret.version, secret.created)


def _batches(wanted: Mapping[tuple[str, str], object]) -> list[Batch]:
    """Names in calls of ten per region, no two with the same base name in one call (so that
    `/db` and `/db:2` can be told apart in the answer)."""
    open_batches: dict[str, list[list[str]]] = {}
    for region, name in wanted:
        base = name.split(":", 1)[0]
        batches = open_batches.setdefault(region, [])
        for batch in batches:
            if len(batch) < BATCH and all(other.split(":", 1)[0] != base for other in batch):
                batch.append(name)
                break
        else:
            batches.append([name])
    return [(region, tuple(batch)) for region, batches in open_batches.items() for batch in batches]
