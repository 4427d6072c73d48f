#!/usr/bin/env bash
# What operators write today for Vault/OpenBao: one `bao kv get -field=...` per value (written out
# as a loop over a manifest, one "VARIABLE path field" line per value, instead of one line each),
# then envsubst into a config file on disk, then exec the server.
#   bao.sh MANIFEST TEMPLATE OUTPUT -- COMMAND [ARG...]   ({config} in an ARG becomes OUTPUT)
set -euo pipefail
manifest=$1 template=$2 output=$3
shift 4
while read -r variable path field; do
    value=$("$BAO" kv get -field="$field" "$path")
    export "$variable=$value"
done < "$manifest"
umask 077
envsubst < "$template" > "$output"
source "$(dirname "$0")/exec_server.sh"
