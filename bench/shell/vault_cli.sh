#!/usr/bin/env bash
# vault-cli (PyPI) renders a Jinja template, reading each KV-v2 path once, serially; the result is
# written to a config file on disk, then the server is exec'd.
#   vault_cli.sh TEMPLATE OUTPUT -- COMMAND [ARG...]   ({config} in an ARG becomes OUTPUT)
set -euo pipefail
template=$1 output=$2
shift 3
umask 077
"$VAULT_CLI" template "$template" --output "$output"
source "$(dirname "$0")/exec_server.sh"
