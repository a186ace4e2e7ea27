#!/usr/bin/env bash
# `make test`: set up what is missing, then lint, type-check and run the whole suite.
# pytest's own exit code is the result: 5 (no tests collected) fails the run like any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}

bash scripts/setup.sh

echo "==> ruff"
"$VENV/bin/ruff" check relay workers tests bench chaos
"$VENV/bin/ruff" format --check relay workers tests bench chaos
echo "==> mypy"
"$VENV/bin/mypy"
echo "==> pytest"
set +e
"$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@"
code=$?
set -e
if [ "$code" = 5 ]; then
  echo "test: pytest collected no tests; that is a failure" >&2
fi
exit "$code"
