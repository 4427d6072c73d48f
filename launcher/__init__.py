"""kms-launch: resolve secret:// references in a server config and exec the server from a sealed memfd."""
