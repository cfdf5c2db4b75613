#!/usr/bin/env bash
# Open the workbook in JupyterLab at the tour (notebooks/tour.ipynb): set up .venv (and Chromium for PNG figures) if
# missing, then start `jupyter lab` from the checkout, with --allow-root when run as root (containers, lab servers,
# these machines: Jupyter refuses root without it). Extra arguments go to jupyter lab, e.g.
#   bash scripts/lab.sh --no-browser --port 8890
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/system-packages.sh figures
args=()
if [ "$(id -u)" -eq 0 ]; then
  args+=(--allow-root)
fi
exec .venv/bin/jupyter lab ${args[@]+"${args[@]}"} "$@" notebooks/tour.ipynb
