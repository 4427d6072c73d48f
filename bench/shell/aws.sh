#!/usr/bin/env bash
# What operators write today for SSM Parameter Store: one `aws ssm get-parameter` per value (a loop
# over a manifest, one "VARIABLE name" line per value), then envsubst into a config file on disk,
# then exec the server.
#   aws.sh MANIFEST TEMPLATE OUTPUT -- COMMAND [ARG...]   ({config} in an ARG becomes OUTPUT)
set -euo pipefail
manifest=$1 template=$2 output=$3
shift 4
while read -r variable name; do
    value=$("$AWS" ssm get-parameter --name "$name" --with-decryption \
        --query Parameter.Value --output text)
    export "$variable=$value"
done < "$manifest"
umask 077
envsubst < "$template" > "$output"
source "$(dirname "$0")/exec_server.sh"
