"""A serial resolver: the strategy of the Cosmian KMS's built-in resolver, written in Python for
the benchmark (this is not the KMS). Every string value that starts with secret:// is resolved
in turn, one request per reference, with a fresh client each time (no session, connection or token
reuse, no deduplication, no concurrency); then the config goes into a memfd and the command is
exec'd, as kms-launch does. It uses the same client libraries as kms-launch's backends, so the two
differ in strategy and in launch-path cost, not in SDKs.

    serial_resolver.py BACKEND CONFIG -- COMMAND [ARG...]   ({config} in an ARG gets the path)
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable, Mapping

# A TOML basic string whose value starts with secret:// (the KMS replaces only such values).
_WHOLE_REFERENCE = re.compile(r'"(secret://[^"\\]*)"')


def vault(ref: str, environ: Mapping[str, str]) -> str:
    import hvac

    mount, _, rest = ref.removeprefix("secret://").partition("/")
    path, _, field = rest.partition("#")
    client = hvac.Client(url=environ["VAULT_ADDR"], token=environ["VAULT_TOKEN"])
    answer = client.secrets.kv.v2.read_secret_version(
        path=path, mount_point=mount, raise_on_deleted_version=True
    )
    return str(answer["data"]["data"][field or "value"])


def aws_ssm(ref: str, environ: Mapping[str, str]) -> str:
    import boto3

    region, _, name = ref.removeprefix("secret://").partition("/")
    client = boto3.session.Session().client("ssm", region_name=region)
    answer = client.get_parameter(Name=f"/{name}", WithDecryption=True)
    return str(answer["Parameter"]["Value"])


def azure_kv(ref: str, environ: Mapping[str, str]) -> str:
    import msal
    import requests

    vault_name, _, rest = ref.removeprefix("secret://").partition("/")
    app = msal.ConfidentialClientApplication(  # a new application, so a new token, per secret
        environ["AZURE_CLIENT_ID"],
        client_credential=environ["AZURE_CLIENT_SECRET"],
        authority=f"{environ['AZURE_AUTHORITY_HOST']}/{environ['AZURE_TENANT_ID']}",
        instance_discovery=False,
    )
    token = app.acquire_token_for_client(scopes=["https://vault.azure.net/.default"])
    base = environ.get("AZURE_KEYVAULT_URL") or f"https://{vault_name}.vault.azure.net"
    response = requests.get(
        f"{base}/{rest}",
        params={"api-version": "7.4"},
        headers={"Authorization": f"Bearer {token['access_token']}"},
        timeout=30,
    )
    response.raise_for_status()
    return str(response.json()["value"])


def cosmian_kms(ref: str, environ: Mapping[str, str]) -> str:
    import requests

    host, _, uid = ref.removeprefix("secret://").partition("/")
    plain = host.split(":")[0] in ("localhost", "127.0.0.1")
    body = {
        "tag": "Get",
        "value": [
            {"tag": "UniqueIdentifier", "type": "TextString", "value": uid},
            {"tag": "KeyWrapType", "type": "Enumeration", "value": "AsRegistered"},
        ],
    }
    response = requests.post(  # requests.post: a new session (and connection) per call
        f"{'http' if plain else 'https'}://{host}/kmip/2_1",
        json=body,
        headers={"Authorization": f"Bearer {environ['COSMIAN_KMS_SECRET_TOKEN']}"},
        timeout=30,
    )
    response.raise_for_status()
    return _kmip_bytes(response.json()).decode("utf-8")


def _kmip_bytes(node: object) -> bytes:
    """The first KeyMaterial / OpaqueDataValue ByteString in a KMIP JSON answer."""
    if isinstance(node, dict):
        if node.get("tag") in ("KeyMaterial", "Key", "OpaqueDataValue") and isinstance(
            node.get("value"), str
        ):
            return bytes.fromhex(node["value"])
        return _kmip_bytes(node.get("value"))
    if isinstance(node, list):
        for item in node:
            try:
                return _kmip_bytes(item)
            except LookupError:
                continue
    raise LookupError("no object bytes in the KMIP answer")


RESOLVERS: dict[str, Callable[[str, Mapping[str, str]], str]] = {
    "vault": vault,
    "aws-ssm": aws_ssm,
    "azure-kv": azure_kv,
    "cosmian-kms": cosmian_kms,
}


def main(argv: list[str]) -> None:
    backend, config, separator, *command = argv
    if separator != "--" or not command:
        raise SystemExit(__doc__)
    resolver = RESOLVERS[backend]
    with open(config, encoding="utf-8") as file:
        text = file.read()
    environ = dict(os.environ)
    resolved = _WHOLE_REFERENCE.sub(lambda match: json.dumps(resolver(match[1], environ)), text)
    fd = os.memfd_create("kms.toml", os.MFD_ALLOW_SEALING)
    os.write(fd, resolved.encode("utf-8"))
    os.lseek(fd, 0, os.SEEK_SET)
    os.set_inheritable(fd, True)
    path = f"/proc/self/fd/{fd}"
    if any("{config}" in arg for arg in command):
        command = [arg.replace("{config}", path) for arg in command]
    else:
        command = [*command, "-c", path]
    os.execvp(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
