#!/usr/bin/env bash
# `make fuzz`: the API fuzzing of issue 9 at full size, on loopback only, bounded in count and time:
# schemathesis and Hypothesis over docs/openapi.yaml and every receiver (RELAY_FUZZ_EXAMPLES per
# operation or property, default 100 here), the OpenAPI accuracy tests, and the memory run over
# RELAY_FUZZ_REQUESTS requests (100,000 here). Each run's numbers are appended, one JSON line
# each, to RELAY_FUZZ_REPORT (default .run/fuzz-report.jsonl) for RELIABILITY.md.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}

RELAY_TEST_SKIP_KUBE=1 bash scripts/setup.sh
mkdir -p .run
export RELAY_FUZZ_EXAMPLES=${RELAY_FUZZ_EXAMPLES:-100}
export RELAY_FUZZ_RANDOM=${RELAY_FUZZ_RANDOM:-1}  # new examples each run (make test: fixed ones)
export RELAY_FUZZ_REQUESTS=${RELAY_FUZZ_REQUESTS:-100000}
export RELAY_FUZZ_REPORT=${RELAY_FUZZ_REPORT:-.run/fuzz-report.jsonl}
: > "$RELAY_FUZZ_REPORT"
echo "==> fuzzing: $RELAY_FUZZ_EXAMPLES examples per property, $RELAY_FUZZ_REQUESTS requests for memory"
started=$(date +%s)
"$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/api "$@"
echo "==> done in $(( $(date +%s) - started )) s; numbers in $RELAY_FUZZ_REPORT"
