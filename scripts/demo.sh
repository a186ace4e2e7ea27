#!/usr/bin/env bash
# `make demo`: install what is missing (Debian packages, the venv), then run `relay demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
RELAY_TEST_SKIP_KUBE=1 bash scripts/setup.sh >/dev/null
exec "${VENV:-.venv}/bin/relay" demo "$@"
