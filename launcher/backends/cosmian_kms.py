"""The `cosmian-kms` backend: SecretData and OpaqueObject bytes from a Cosmian KMS over KMIP 2.1 JSON."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from ipaddress import IPv6Address
from typing import Any, ClassVar

import requests
import urllib3

from launcher.backends import Backend, Secret, reject_field, reject_version
from launcher.backends._http import (
    Session,
    ca_bundle,
    header_value,
    redirect_error,
    transport_error,
)
from launcher.backends._transport import retry_after
from launcher.deadline import Deadline, concurrently, retry
from launcher.errors import (
    AccessDenied,
    BackendFailed,
    BackendUnavailable,
    BadReference,
    BadSecretValue,
    Failures,
    NotConfigured,
    SecretNotFound,
)
from launcher.refs import Ref

log = logging.getLogger("kms-launch")

DEFAULT_PORT = 9998
PATH = "/kmip/2_1"
# Plain http only for exactly these (and [::1]): a prefix match, as in the KMS, would send
# `localhost.evil.example` in clear.
PLAIN_HTTP_HOSTS = frozenset({"localhost", "127.0.0.1"})
_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_HOSTNAME = re.compile(rf"(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*\.?")
_TYPE_NAME = re.compile(r"[A-Za-z]{1,40}")
_USABLE_TYPES = ("SecretData", "OpaqueObject")
# OpaqueObject's bytes: `OpaqueDataValue` in 5.x; 4.x's OpaqueObject variant has no
# rename_all, so its fields go out under their Rust names (kmip_objects.rs at 4.22.1).
_OPAQUE_VALUE_TAGS = ("OpaqueDataValue", "opaque_data_value")
# Inside a KeyMaterial Structure: `ByteString` (4.x's hand-written serialiser for ByteString key
# material) or `Key` (TransparentSymmetricKey, both releases).
_KEY_MATERIAL_BYTES_TAGS = ("ByteString", "Key")
# KMIP enumerations may also be written as hex integers (KMIP 2.1 JSON profile).
_OBJECT_TYPE_CODES = {
    0x01: "Certificate",
    0x02: "SymmetricKey",
    0x03: "PublicKey",
    0x04: "PrivateKey",
    0x07: "SecretData",
    0x08: "OpaqueObject",
}
_TRUE, _FALSE = frozenset({"true", "1"}), frozenset({"false", "0", ""})


class CosmianKmsBackend(Backend):
    """secret://<host>[:<port>]/<object-id>: a KMIP Get of that object, its bytes as the value."""

    name: ClassVar[str] = "cosmian-kms"

    def __init__(self, environ: Mapping[str, str], deadline: Deadline) -> None:
        super().__init__(environ, deadline)
        token = self.credential("COSMIAN_KMS_SECRET_TOKEN")
        self._token = token and header_value("COSMIAN_KMS_SECRET_TOKEN", token)
        self._session = Session(self._verification())

    def check(self, ref: Ref) -> None:
        reject_field(ref)
        reject_version(ref, "a KMS object is immutable, its ID already names one version")
        if len(ref.path) != 1 or not ref.path[0]:
            raise BadReference("expected secret://<host>[:<port>]/<object-id>", ref=ref.text)
        if not ref.host.startswith("[") and not _HOSTNAME.fullmatch(ref.host):
            raise BadReference(f"{ref.host!r} is not a host name", ref=ref.text)

    def url(self, ref: Ref) -> str:
        """The KMIP endpoint of the KMS a reference names: http only for the loopback names."""
        plain = ref.host in PLAIN_HTTP_HOSTS or (
            ref.host.startswith("[") and IPv6Address(ref.host[1:-1]) == IPv6Address("::1")
        )
        return f"{'http' if plain else 'https'}://{ref.host}:{ref.port or DEFAULT_PORT}{PATH}"

    def fetch(self, refs: Sequence[Ref]) -> Mapping[Ref, Secret]:
        # The UID is the version (objects are immutable); KMIP Get carries no creation time.
        values, failures = concurrently(
            lambda ref: Secret(self._get(ref), version=ref.path[0]), refs
        )
        if failures:
            raise Failures(failures, resolved=values)
        return values

    def _verification(self) -> bool | str:
        """requests' `verify`: False, a CA bundle path, or True for the system store."""
        insecure = self.environ.get("COSMIAN_KMS_INSECURE_CERTS", "").strip().lower()
        if insecure not in _TRUE | _FALSE:
            raise NotConfigured("COSMIAN_KMS_INSECURE_CERTS must be true, 1, false or 0")
        if insecure in _TRUE:
            # Still TLS, just unauthenticated: the operator asked for it, say so once.
            log.warning("COSMIAN_KMS_INSECURE_CERTS is set: KMS certificates are not verified")
            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
            return False
        return ca_bundle(
            self.environ, ("COSMIAN_KMS_CA_CERT", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")
        )

    def _get(self, ref: Ref) -> bytes:
        url = self.url(ref)
        uid = ref.path[0]
        body: dict[str, Any] = {
            "tag": "Get",
            "value": [
                {"tag": "UniqueIdentifier", "type": "TextString", "value": uid},
                {"tag": "KeyWrapType", "type": "Enumeration", "value": "AsRegistered"},
            ],
        }
        headers = {"Accept": "application/json"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"

        def attempt(timeout: float) -> bytes:
            try:
                response = self._session.post(url, json=body, headers=headers, timeout=timeout)
            except requests.RequestException as error:
                raise transport_error(
                    error,
                    where=url.rsplit(PATH, 1)[0],
                    ca_variable="COSMIAN_KMS_CA_CERT",
                    check="the reference's host and port, and COSMIAN_KMS_CA_CERT",
                    timeout=timeout,
                    ref=ref.text,
                ) from None
            return self._answer(ref, uid, response)

        return retry(self.deadline, attempt)

    def _answer(self, ref: Ref, uid: str, response: requests.Response) -> bytes:
        status = response.status_code
        redirected = redirect_error(
            response,
            where=f"the KMS at {ref.host}:{ref.port or DEFAULT_PORT}",
            setting="the reference's host and port",
            ref=ref.text,
        )
        if redirected is not None:
            raise redirected
        # Never quote a body here: the KMS may echo what it holds.
        if status == 200:
            try:
                answer = response.json()
            except ValueError:
                raise BackendFailed(
                    "the KMS answered 200 with a body that is not JSON", ref=ref.text
                ) from None
            return object_bytes(answer, ref)
        if status == 401:
            hint = (
                "the KMS refused the token in COSMIAN_KMS_SECRET_TOKEN"
                if self._token
                else "the KMS requires authentication: set COSMIAN_KMS_SECRET_TOKEN"
            )
            raise AccessDenied(f"{hint} (401 Unauthorized)", ref=ref.text)
        if status == 403:
            raise AccessDenied("the KMS denied access to this object (403 Forbidden)", ref=ref.text)
        if status == 422:
            raise SecretNotFound(
                f"the KMS has no object {uid!r} readable with these credentials (422)",
                ref=ref.text,
            )
        if status == 429 or status >= 500:
            raise BackendUnavailable(
                f"the KMS answered HTTP {status}",
                ref=ref.text,
                retry_after=retry_after(response.headers.get("Retry-After")),
            )
        raise BackendFailed(
            f"the KMS answered HTTP {status}: is {response.url} a Cosmian KMS KMIP 2.1 endpoint?",
            ref=ref.text,
        )


def object_bytes(answer: Any, ref: Ref) -> bytes:
    """The bytes of a SecretData or OpaqueObject in a KMIP 2.1 JSON GetResponse."""
    items = _children(answer, "GetResponse")
    if items is None:
        raise BackendFailed("the KMS answer is not a KMIP GetResponse", ref=ref.text)
    found = [
        item
        for item in items
        if isinstance(item, dict) and item.get("tag") not in ("ObjectType", "UniqueIdentifier")
    ]
    if len(found) != 1 or not isinstance(found[0].get("value"), list):
        raise BackendFailed("the KMS answer holds no object", ref=ref.text)
    object_type = _object_type(found[0].get("tag"), _leaf(items, "ObjectType"))
    if object_type not in _USABLE_TYPES:
        raise BadSecretValue(
            f"the object is a {object_type or 'type this launcher does not know'},"
            " not SecretData or OpaqueObject",
            ref=ref.text,
        )
    content: list[Any] = found[0]["value"]
    if object_type == "OpaqueObject":
        data = _leaf_any(content, _OPAQUE_VALUE_TAGS)
    else:
        block = _children_of(content, "KeyBlock") or []
        if _find(block, "KeyWrappingData") is not None:
            raise BadSecretValue(
                "the object is stored wrapped by another key; store it unwrapped", ref=ref.text
            )
        data = _key_material(_children_of(block, "KeyValue") or [])
    if not isinstance(data, str):
        raise BackendFailed("the KMS answer holds no object bytes", ref=ref.text)
    try:
        return bytes.fromhex(data)  # either case
    except ValueError:
        raise BackendFailed("the KMS answer's object bytes are not hex", ref=ref.text) from None


def _object_type(tag: Any, declared: Any) -> str | None:
    """The object's type name: its tag (current servers), else for the tag `Object` (older
    ones) the ObjectType, a name or a hex code. None if it is nothing we may repeat."""
    name = declared if tag == "Object" else tag
    if isinstance(name, int) and not isinstance(name, bool):  # an Enumeration as a JSON number
        name = _OBJECT_TYPE_CODES.get(name)
    if isinstance(name, str) and name.startswith("0x"):
        try:
            name = _OBJECT_TYPE_CODES.get(int(name, 16))
        except ValueError:
            return None
    return name if isinstance(name, str) and _TYPE_NAME.fullmatch(name) else None


def _key_material(key_value: list[Any]) -> Any:
    """The hex of a KeyValue's KeyMaterial, in whichever way the KMS wrote it: a ByteString
    itself (5.x, KeyFormatType Raw or Opaque), a Structure holding a `ByteString` (4.x
    serialises every ByteString key material so), or one holding `Key` (TransparentSymmetricKey).
    Anything else (a transparent RSA or EC key, a missing value) is None."""
    material = _leaf(key_value, "KeyMaterial")
    if isinstance(material, list):
        return _leaf_any(material, _KEY_MATERIAL_BYTES_TAGS)
    return material


def _leaf_any(items: list[Any], tags: tuple[str, ...]) -> Any:
    """The value of the one item tagged with any of `tags`; None if there is none or several
    (two candidates would make the answer ambiguous, and guessing could deliver the wrong bytes)."""
    matches = [item for item in items if isinstance(item, dict) and item.get("tag") in tags]
    return matches[0].get("value") if len(matches) == 1 else None


def _find(items: list[Any], tag: str) -> dict[str, Any] | None:
    for item in items:
        if isinstance(item, dict) and item.get("tag") == tag:
            return item
    return None


def _leaf(items: list[Any], tag: str) -> Any:
    item = _find(items, tag)
    return None if item is None else item.get("value")


def _children(node: Any, tag: str) -> list[Any] | None:
    if isinstance(node, dict) and node.get("tag") == tag and isinstance(node.get("value"), list):
        return list(node["value"])
    return None


def _children_of(items: list[Any], tag: str) -> list[Any] | None:
    return _children(_find(items, tag), tag)
