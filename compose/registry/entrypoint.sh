#!/bin/sh
# Render the registry's config with the notification token from its secret file, then serve it.
# The token is read from a file and written to a private file: never on a command line.
set -eu
template=${REGISTRY_CONFIG_TEMPLATE:-/etc/docker/registry/config.template.yml}
rendered=${REGISTRY_RENDERED_CONFIG:-/tmp/registry-config.yml}
token_file=${REGISTRY_NOTIFY_TOKEN_FILE:-/run/secrets/registry_notify_token}
token=$(cat "$token_file")
case "$token" in
  "" | *[!A-Za-z0-9._~+/=-]*)
    echo "registry: $token_file must hold a non-empty token of letters, digits and ._~+/=-" >&2
    exit 1 ;;
esac
umask 077
sed "s|@REGISTRY_NOTIFY_TOKEN@|$token|" "$template" > "$rendered"
exec "${REGISTRY_BIN:-registry}" serve "$rendered"
