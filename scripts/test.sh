#!/usr/bin/env bash
# Set up .venv and the Debian packages if missing, then run the whole test suite (CPU, 2 cores: 11 to 11.5 minutes from a fresh clone on 2026-12-04, setup included).
# Extra arguments go to pytest (e.g. -k recipes, -m "not slow").
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/system-packages.sh &  # apt's downloads and unpacking beside pip's
packages=$!
bash scripts/setup.sh
wait "$packages"
exec .venv/bin/python -m pytest "$@"
