#!/usr/bin/env bash
# The main job: set up .venv if missing, then train the A3 procedure scaled to this
# machine (params/demo.yaml) on the embedded Fashion-MNIST subset. Uses a GPU when
# there is one. Extra arguments go to `rsbkit train` (e.g. --device cpu).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m rsbkit train params/demo.yaml --data default --out "runs/demo-$(date +%Y%m%d-%H%M%S)" "$@"
