#!/usr/bin/env bash
# Set up .venv and the Debian packages if missing, then run the whole test suite (CPU: 10 to 11.5 minutes on 2 cores, 11.5 to 12.5 with a fresh setup).
# Extra arguments go to pytest (e.g. -k recipes, -m "not slow").
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/system-packages.sh &  # apt's downloads and unpacking beside pip's
packages=$!
bash scripts/setup.sh
wait "$packages"
exec .venv/bin/python -m pytest "$@"
