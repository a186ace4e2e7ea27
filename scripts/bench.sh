#!/usr/bin/env bash
# `make bench`: every benchmark in bench/ (python -m bench.all), one table of ratios and goals,
# a dated row per metric appended to BENCHMARKS.md. Loopback only; each benchmark is bounded in
# time and stops the services it started. Extra arguments go to bench.all (--full, --only NAME…,
# --no-record).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}

# the reconcile benchmarks run a real kube-apiserver: setup builds it once (cached) if missing
bash scripts/setup.sh

# The load generator and the webhook baseline are needed by the benchmarks only.
missing=()
for pair in wrk:wrk webhook:webhook; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
done
if [ "${#missing[@]}" -gt 0 ] && [ "$(id -u)" -eq 0 ]; then
  echo "==> apt-get install ${missing[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
exec "$VENV/bin/python" -m bench.all "$@"
