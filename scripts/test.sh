#!/usr/bin/env bash
# Set up .venv and the Debian packages if missing, then run the whole test suite (its time on the hosts measured:
# README.md; dated runs: benchmarks/README.md). Its limits scale with the host (tests/clock.py).
# Extra arguments go to pytest (e.g. -k recipes, -m "not slow").
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/system-packages.sh &  # apt's downloads and unpacking beside pip's
packages=$!
bash scripts/setup.sh
wait "$packages"
exec .venv/bin/python -m pytest "$@"
