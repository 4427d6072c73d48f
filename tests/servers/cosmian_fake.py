"""A fake Cosmian KMS KMIP 2.1 JSON endpoint (POST /kmip/2_1, Get only), as strict as the server."""

from __future__ import annotations

import itertools
import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.servers.tls import FakeServer, Fault, Request, Response, ServerCertificate

PATH = "/kmip/2_1"


@dataclass(frozen=True)
class Encoding:
    """How an answer spells its object: each way a current or older server may write it."""

    tag_as_type: bool = True  # the object is tagged "SecretData"/"OpaqueObject", else "Object"
    typed: bool = True  # structures carry "type": "Structure"
    upper_hex: bool = True  # ByteString hex in upper case, else lower
    key_structure: bool = False  # KeyMaterial is a structure holding `Key`, else a ByteString
    # What Cosmian KMS 4.x writes (kmip_data_structures.rs and kmip_objects.rs at 4.22.1):
    byte_string_structure: bool = False  # KeyMaterial is a structure holding `ByteString`
    snake_case_opaque: bool = False  # OpaqueObject's fields under their Rust names
    # The ObjectType enumeration as a name (None), a hex code ("0x00000007") or a JSON number.
    object_type_code: str | int | None = None

    def __str__(self) -> str:
        return "-".join(
            (
                "named" if self.tag_as_type else "Object",
                "typed" if self.typed else "untyped",
                "HEX" if self.upper_hex else "hex",
                "Key" if self.key_structure
                else "ByteString" if self.byte_string_structure
                else "bytes",
                *(["snake"] if self.snake_case_opaque else []),
                *([f"type={self.object_type_code}"] if self.object_type_code is not None else []),
            )
        )  # fmt: skip


ENCODINGS = [Encoding(*flags) for flags in itertools.product((True, False), repeat=4)]

# Each release's answer to a Get, as its source serialises it (read at those tags of
# github.com/Cosmian/kms): 4.x puts the object under the field name `Object` (an untagged enum),
# types every structure and wraps ByteString key material in a structure; 5.x tags the object
# with its type, leaves out "type" on structures and writes the ByteString directly.
RELEASES = {
    "4.22.1": Encoding(
        tag_as_type=False, typed=True, byte_string_structure=True, snake_case_opaque=True
    ),
    "5.26.0": Encoding(tag_as_type=True, typed=False),
}


def get_request(uid: str) -> dict[str, Any]:
    """The one request shape the server accepts for a Get, as the launcher must send it."""
    return {
        "tag": "Get",
        "value": [
            {"tag": "UniqueIdentifier", "type": "TextString", "value": uid},
            {"tag": "KeyWrapType", "type": "Enumeration", "value": "AsRegistered"},
        ],
    }


class CosmianFake(FakeServer):
    """Objects by unique identifier; every request counted under the endpoint "kmip"."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        certificate: ServerCertificate | None = None,
        token: str | None = None,
        ca_path: Path | None = None,
    ) -> None:
        super().__init__(host, certificate)
        self.ca_path = ca_path  # the CA that signed `certificate`, for COSMIAN_KMS_CA_CERT
        self.token = token  # when set, every request needs `Authorization: Bearer <token>`
        self.answers: dict[str, dict[str, Any]] = {}
        self.echo_secrets = False  # error bodies quote the most recently stored value
        self._last_value = b""

    # -- what tests store

    def put_secret_data(self, value: bytes, encoding: Encoding = Encoding()) -> str:
        if encoding.key_structure or encoding.byte_string_structure:
            inner = "Key" if encoding.key_structure else "ByteString"
            key_material = _struct("KeyMaterial", [_bytes(inner, value, encoding)], encoding)
        else:
            key_material = _bytes("KeyMaterial", value, encoding)
        key_block = _struct(
            "KeyBlock",
            [
                {"tag": "KeyFormatType", "type": "Enumeration", "value": "Raw"},
                _struct(
                    "KeyValue",
                    [
                        key_material,
                        _struct(
                            "Attributes",
                            [{"tag": "ObjectType", "type": "Enumeration", "value": "SecretData"}],
                            encoding,
                        ),
                    ],
                    encoding,
                ),
            ],
            encoding,
        )
        content = [{"tag": "SecretDataType", "type": "Enumeration", "value": "Password"}, key_block]
        return self._store("SecretData", content, encoding, value)

    def put_opaque(self, value: bytes, encoding: Encoding = Encoding()) -> str:
        snake = encoding.snake_case_opaque
        content = [
            {
                "tag": "opaque_data_type" if snake else "OpaqueDataType",
                "type": "Enumeration",
                "value": "Unknown",
            },
            _bytes("opaque_data_value" if snake else "OpaqueDataValue", value, encoding),
        ]
        return self._store("OpaqueObject", content, encoding, value)

    def put_symmetric_key(self, key: bytes) -> str:
        encoding = Encoding(key_structure=True)
        key_block = _struct(
            "KeyBlock",
            [
                {"tag": "KeyFormatType", "type": "Enumeration", "value": "TransparentSymmetricKey"},
                _struct(
                    "KeyValue",
                    [_struct("KeyMaterial", [_bytes("Key", key, encoding)], encoding)],
                    encoding,
                ),
                {"tag": "CryptographicAlgorithm", "type": "Enumeration", "value": "AES"},
                {"tag": "CryptographicLength", "type": "Integer", "value": len(key) * 8},
            ],
            encoding,
        )
        return self._store("SymmetricKey", [key_block], encoding, key)

    def ref(self, uid: str, host: str | None = None) -> str:
        host = host or (f"[{self.host}]" if ":" in self.host else self.host)
        return f"secret://{host}:{self.port}/{uid}"

    # -- the endpoint

    def endpoint(self, request: Request) -> str:
        return "kmip" if request.path == PATH else "other"

    def fault_response(self, endpoint: str, fault: Fault) -> Response:
        headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
        return Response.text(fault.status, self._echo(f"injected fault {fault.status}"), headers)

    def respond(self, endpoint: str, request: Request) -> Response:
        if endpoint != "kmip":
            return Response(404)
        if request.method != "POST":
            return Response(405, headers={"Allow": "POST"})
        if (
            self.token is not None
            and request.headers.get("Authorization") != f"Bearer {self.token}"
        ):
            return Response.text(401, "Unauthorized: bad or missing bearer token")
        if request.headers.get_content_type() != "application/json":
            return Response.text(400, "Content type error")
        try:
            body = json.loads(request.body)
        except ValueError as error:
            return Response.text(400, f"Json deserialize error: {error}")
        uid = _requested_uid(body)
        if uid is None:
            return Response.text(422, self._echo("Invalid Request: expected a KMIP 2.1 Get"))
        answer = self.answers.get(uid)
        if answer is None:
            return Response.text(
                422, self._echo(f"Item_Not_Found: Get: no object with unique identifier {uid}")
            )
        return Response.json(200, answer)

    def _store(
        self, object_type: str, content: list[dict[str, Any]], encoding: Encoding, value: bytes
    ) -> str:
        uid = str(uuid.uuid4())
        self.answers[uid] = _struct(
            "GetResponse",
            [
                {
                    "tag": "ObjectType",
                    "type": "Enumeration",
                    "value": object_type
                    if encoding.object_type_code is None
                    else encoding.object_type_code,
                },
                {"tag": "UniqueIdentifier", "type": "TextString", "value": uid},
                _struct(object_type if encoding.tag_as_type else "Object", content, encoding),
            ],
            encoding,
        )
        self._last_value = value
        return uid

    def _echo(self, text: str) -> str:
        if not self.echo_secrets:
            return text
        return f"{text} (object bytes: {self._last_value.decode('utf-8', 'replace')})"


def _requested_uid(body: Any) -> str | None:
    """The identifier asked for, if the body is exactly the Get shape; None otherwise."""
    if not isinstance(body, dict) or not isinstance(body.get("value"), list):
        return None
    items = body["value"]
    if len(items) != 2 or not isinstance(items[0], dict):
        return None
    uid = items[0].get("value")
    if not isinstance(uid, str) or not uid:
        return None
    return uid if body == get_request(uid) else None


def _struct(tag: str, value: list[dict[str, Any]], encoding: Encoding) -> dict[str, Any]:
    node: dict[str, Any] = {"tag": tag}
    if encoding.typed:
        node["type"] = "Structure"
    node["value"] = value
    return node


def _bytes(tag: str, value: bytes, encoding: Encoding) -> dict[str, Any]:
    text = value.hex()
    return {"tag": tag, "type": "ByteString", "value": text.upper() if encoding.upper_hex else text}


class CosmianStore:
    """The shared backend contract's store: SecretData objects, read with a bearer token."""

    backend = "cosmian-kms"

    def __init__(self, fake: CosmianFake) -> None:
        self.fake = fake

    def put(self, value: str) -> str:
        return self.fake.ref(self.fake.put_secret_data(value.encode()))

    def missing(self) -> str:
        return self.fake.ref(str(uuid.uuid4()))

    def environ(self) -> dict[str, str]:
        environ = {"COSMIAN_KMS_CA_CERT": str(self.fake.ca_path)}
        if self.fake.token:
            environ["COSMIAN_KMS_SECRET_TOKEN"] = self.fake.token
        return environ
