"""Secret files from a real vault: a TLS key and a PKCS#12 stored in OpenBao reach the server
byte-exact through the /proc/self/fd paths substituted for secret+file:// references."""

from __future__ import annotations

import base64
import errno
import uuid

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12

from tests.servers.tls import self_signed


def key_and_pkcs12() -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = self_signed("kms.example.internal", key).sign(key, hashes.SHA256())
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    p12 = pkcs12.serialize_key_and_certificates(
        b"kms", key, certificate, None, serialization.BestAvailableEncryption(b"p12-password")
    )
    return pem, p12


def test_a_tls_key_and_a_pkcs12_from_openbao_reach_the_server_as_files(
    openbao, run_launcher, write_config
) -> None:
    pem, p12 = key_and_pkcs12()
    path = f"tls/{uuid.uuid4().hex[:8]}"
    openbao.put(path, key=pem.decode(), p12=base64.b64encode(p12).decode(), password="p12-password")
    config = write_config(
        "[tls]\n"
        f'tls_key_file = "secret+file://secret/{path}#key"\n'
        f'tls_p12_file = "secret+file+base64://secret/{path}#p12"\n'
        f'tls_p12_password = "secret://secret/{path}#password"\n'
    )
    launch = run_launcher(
        "--backend", "vault", "-c", str(config),
        env={"VAULT_ADDR": openbao.url, "VAULT_TOKEN": openbao.token},
    )
    assert launch.returncode == 0, launch.stderr
    tls = launch.report["parsed"]["tls"]
    key_file = launch.report["files"][tls["tls_key_file"]]
    p12_file = launch.report["files"][tls["tls_p12_file"]]
    assert base64.b64decode(key_file["bytes_b64"]) == pem
    assert base64.b64decode(p12_file["bytes_b64"]) == p12
    assert tls["tls_p12_password"] == "p12-password"
    key, certificate, _ = pkcs12.load_key_and_certificates(base64.b64decode(p12_file["bytes_b64"]), b"p12-password")
    assert key is not None  # the server could really load it
    assert certificate is not None
    assert p12_file["link"] == "/memfd:tls.tls_p12_file (deleted)"
    assert key_file["write_errno"] == errno.EPERM
    assert pem.decode() not in launch.report["config_text"]  # the key is in its own memfd only


def test_bad_base64_from_openbao_is_a_data_error(openbao, run_launcher, write_config) -> None:
    path = f"tls/{uuid.uuid4().hex[:8]}"
    openbao.put(path, p12="not base64 at all!")
    config = write_config(f'[tls]\ntls_p12_file = "secret+file+base64://secret/{path}#p12"\n')
    launch = run_launcher(
        "--backend", "vault", "-c", str(config),
        env={"VAULT_ADDR": openbao.url, "VAULT_TOKEN": openbao.token},
    )
    assert launch.returncode == 65
    assert launch.report is None
    assert launch.stderr == (
        f"kms-launch: tls.tls_p12_file: secret+file+base64://secret/{path}#p12: the secret is not valid base64\n"
    )
