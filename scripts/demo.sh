#!/usr/bin/env bash
# The main job: set up .venv (and Chromium for PNG figures) if missing, then run the
# train notebook through papermill with the A3 procedure scaled to this machine
# (params/demo.yaml) on the embedded Fashion-MNIST subset. The run folder gets the
# metrics, checkpoints, curves.png and the executed notebook with its HTML export.
# Uses a GPU when there is one. Extra arguments are notebook parameters, e.g.
#   bash scripts/demo.sh -p device cpu -p seed 1
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/system-packages.sh figures
exec .venv/bin/python -m rsbkit run notebooks/procedures/train.ipynb -p recipe params/demo.yaml "$@" \
  --out "runs/demo-$(date +%Y%m%d-%H%M%S)"
