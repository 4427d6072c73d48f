"""Every shape a Cosmian KMS 4.x or 5.x answers a Get with, for SecretData and OpaqueObject.

The fake's RELEASES are written from each release's serialiser (kmip_data_structures.rs,
kmip_objects.rs and the TTLV serialiser at tags 4.22.1 and 5.26.0). Cosmian's own 4.22.1 Python
client (`pip install cosmian-kms==4.22.1`, KmsClient.get_object) parses the fake's 4.22.1 answers
for both types and rejects the 5.x ones ("missing field `Object`"), and it rejects a 4.x answer
whose KeyMaterial is a bare ByteString or whose OpaqueObject fields are PascalCase: so the 4.x
shapes served here are the ones a 4.x server sends."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from launcher import backends, refs
from launcher.deadline import Deadline
from launcher.errors import BackendFailed, BadSecretValue, Failures
from tests.conftest import Launch, served, values_of
from tests.servers.cosmian_fake import RELEASES, CosmianFake, Encoding

VALUE = b"db-p@ss \x00\xff bytes"


def fetch(kms: CosmianFake, uid: str) -> bytes:
    """The bytes the backend resolves `uid` to, or its error."""
    ref = refs.parse(kms.ref(uid))
    backend = backends.load("cosmian-kms")({"COSMIAN_KMS_CA_CERT": str(kms.ca_path)}, Deadline(10))
    return values_of(backend.fetch([ref]))[ref]


def failure(kms: CosmianFake, uid: str) -> Exception:
    with pytest.raises(Failures) as raised:
        fetch(kms, uid)
    [error] = raised.value.errors
    return error


def store_answer(kms: CosmianFake, object_tag: str, content: list[dict[str, Any]]) -> str:
    """Serve a hand-written object (tag and content) as the answer for a new UID."""
    uid = kms.put_opaque(b"placeholder")
    answer = kms.answers[uid]
    answer["value"][-1] = {"tag": object_tag, "value": content}
    return uid


def secret_data(key_material: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {"tag": "SecretDataType", "type": "Enumeration", "value": "Password"},
        {
            "tag": "KeyBlock",
            "value": [
                {"tag": "KeyFormatType", "type": "Enumeration", "value": "Raw"},
                {"tag": "KeyValue", "value": [key_material]},
            ],
        },
    ]


# -- each release's own shape ---------------------------------------------------------------------


@pytest.mark.parametrize("release", RELEASES)
def test_each_release_s_secret_data_gives_its_bytes(
    cosmian_fake: CosmianFake, release: str
) -> None:
    assert fetch(cosmian_fake, cosmian_fake.put_secret_data(VALUE, RELEASES[release])) == VALUE


@pytest.mark.parametrize("release", RELEASES)
def test_each_release_s_opaque_object_gives_its_bytes(
    cosmian_fake: CosmianFake, release: str
) -> None:
    assert fetch(cosmian_fake, cosmian_fake.put_opaque(VALUE, RELEASES[release])) == VALUE


def test_a_4x_kms_as_the_source_launches_the_server(
    cosmian_fake: CosmianFake,
    run_launcher: Callable[..., Launch],
    write_config: Callable[[str], Path],
) -> None:
    """The issue's case, end to end: before, this exited 69 "the KMS answer holds no object bytes"."""
    old = RELEASES["4.22.1"]
    password = cosmian_fake.ref(cosmian_fake.put_secret_data(b"from-4x-secret-data", old))
    opaque = cosmian_fake.ref(cosmian_fake.put_opaque(b"from-4x-opaque", old))
    config = write_config(
        f'[db]\ndatabase_url = "{password}"\n[tls]\ntls_p12_password = "{opaque}"\n'
    )
    result = run_launcher(
        "--backend", "cosmian-kms", "-c", str(config),
        env={"COSMIAN_KMS_CA_CERT": str(cosmian_fake.ca_path)},
    )  # fmt: skip
    assert served(result) == {
        "db": {"database_url": "from-4x-secret-data"},
        "tls": {"tls_p12_password": "from-4x-opaque"},
    }


# -- variations each release may write --------------------------------------------------------------


@pytest.mark.parametrize("typed", [True, False], ids=["typed", "untyped"])
@pytest.mark.parametrize("tag_as_type", [True, False], ids=["named", "Object"])
def test_a_key_material_structure_holding_a_byte_string_gives_the_bytes(
    cosmian_fake: CosmianFake, typed: bool, tag_as_type: bool
) -> None:
    shape = Encoding(tag_as_type=tag_as_type, typed=typed, byte_string_structure=True)
    assert fetch(cosmian_fake, cosmian_fake.put_secret_data(VALUE, shape)) == VALUE


@pytest.mark.parametrize("code", ["0x00000007", "0x07", 7], ids=str)
def test_an_object_type_written_as_a_code_is_understood(
    cosmian_fake: CosmianFake, code: str | int
) -> None:
    shape = Encoding(tag_as_type=False, object_type_code=code)
    assert fetch(cosmian_fake, cosmian_fake.put_secret_data(VALUE, shape)) == VALUE


def test_an_opaque_object_type_written_as_a_number_is_understood(cosmian_fake: CosmianFake) -> None:
    shape = Encoding(tag_as_type=False, object_type_code=8, snake_case_opaque=True)
    assert fetch(cosmian_fake, cosmian_fake.put_opaque(VALUE, shape)) == VALUE


# -- shapes that hold no usable bytes stay refused ------------------------------------------------


def test_a_key_material_structure_with_two_candidates_is_refused_not_guessed(
    cosmian_fake: CosmianFake,
) -> None:
    material = {
        "tag": "KeyMaterial",
        "value": [
            {"tag": "ByteString", "type": "ByteString", "value": b"first".hex()},
            {"tag": "Key", "type": "ByteString", "value": b"second".hex()},
        ],
    }
    error = failure(cosmian_fake, store_answer(cosmian_fake, "SecretData", secret_data(material)))
    assert isinstance(error, BackendFailed)
    assert error.message == "the KMS answer holds no object bytes"


def test_a_transparent_key_structure_is_no_secret_bytes(cosmian_fake: CosmianFake) -> None:
    material = {
        "tag": "KeyMaterial",
        "value": [
            {"tag": "KeyTypeSer", "type": "Enumeration", "value": "RsaPublic"},
            {"tag": "Modulus", "type": "BigInteger", "value": "0x00C3"},
        ],
    }
    error = failure(cosmian_fake, store_answer(cosmian_fake, "SecretData", secret_data(material)))
    assert isinstance(error, BackendFailed)
    assert error.message == "the KMS answer holds no object bytes"


def test_an_opaque_object_with_both_spellings_of_its_value_is_refused(
    cosmian_fake: CosmianFake,
) -> None:
    content = [
        {"tag": "OpaqueDataValue", "type": "ByteString", "value": b"first".hex()},
        {"tag": "opaque_data_value", "type": "ByteString", "value": b"second".hex()},
    ]
    error = failure(cosmian_fake, store_answer(cosmian_fake, "OpaqueObject", content))
    assert isinstance(error, BackendFailed)


def test_a_4x_symmetric_key_is_still_not_a_secret(cosmian_fake: CosmianFake) -> None:
    uid = cosmian_fake.put_symmetric_key(b"\x01" * 32)
    answer = cosmian_fake.answers[uid]
    answer["value"][-1]["tag"] = "Object"  # 4.x: the field name, the type only in ObjectType
    error = failure(cosmian_fake, uid)
    assert isinstance(error, BadSecretValue)
    assert "SymmetricKey, not SecretData or OpaqueObject" in error.message
