#!/usr/bin/env bash
# Prepare this machine for the relay's tests: system packages and services, the Python venv with
# the package and its dev extra, and (once, cached outside the repository) a real kube-apiserver.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}

step() { printf '==> %s\n' "$*"; }

if [ -x scripts/setup-system.sh ] || [ -f scripts/setup-system.sh ]; then
  step "system packages and RabbitMQ"
  bash scripts/setup-system.sh
fi

if [ ! -x "$VENV/bin/python" ]; then
  step "creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
step "installing the relay with its dev extra"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -e '.[dev]' 2>&1 | grep -v '^WARNING: Location' || true
"$VENV/bin/python" -c "import relay, workers, aio_pika, aiohttp, pytest" \
  || { echo "setup: the Python packages did not install" >&2; exit 1; }

if [ "${RELAY_TEST_SKIP_KUBE:-0}" != 1 ] && [ -f scripts/kube/build-apiserver.sh ]; then
  step "kube-apiserver for the tests (built once, cached outside the repository)"
  bash scripts/kube/build-apiserver.sh
fi
