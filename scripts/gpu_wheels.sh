#!/usr/bin/env bash
# Fill .gpu-wheels/ (git-ignored) with what the GPU check needs beyond the GPU machine's image, for that image's
# Python (3.12, x86-64): timm at or above rsbkit's floor (pure Python; its needs, torch, torchvision, pyyaml,
# huggingface_hub and safetensors, are on the image). Run it where PyPI is reachable, then take the folder along:
# with this project's device tool, `carry: [".gpu-wheels"]`; elsewhere, copy it beside scripts/. gpu_check.sh
# installs it (pip --no-index) only when the machine's own timm is older than the floor.
#   bash scripts/gpu_wheels.sh [TIMM_VERSION]     (default: the newest timm on PyPI)
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && python=.venv/bin/python
spec="timm>=1.0.31"
[ $# -gt 0 ] && spec="timm==$1"
rm -rf .gpu-wheels && mkdir -p .gpu-wheels
"$python" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation py \
  --platform any -d .gpu-wheels "$spec"
ls -l .gpu-wheels
