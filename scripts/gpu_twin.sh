#!/usr/bin/env bash
# A twin of the GPU machine's image, here: its Python (3.12), torch 2.11.0 and torchvision 0.26.0 (the CUDA builds,
# which run on a CPU), numpy, pandas and the few other packages of the image that the check reaches, timm from
# .gpu-wheels/, and nothing the image lacks (no plotly, papermill, jupyter, ipywidgets, kaleido, submitit or
# playwright). rsbkit is taken from the source tree (PYTHONPATH), as on the GPU machine. In it, this runs:
#   1. scripts/gpu_check.sh --dry-run (every step of the GPU check, at tiny sizes on the CPU);
#   2. tests/core/test_input*.py (the input path's tests; the CUDA-only ones skip);
#   3. the two-rank gloo probes of tests/core/test_distributed.py (torchrun, and a rank that stops the other).
# Not part of the default suite: the environment is several GB, downloaded once and kept outside the checkout
# (RSBKIT_TWIN_DIR, default ~/.cache/rsbkit/gpu-twin). Exit 0 when all three pass.
#   bash scripts/gpu_twin.sh [--out DIR]      (DIR: the dry run's folder and twin.log; default gpu-check-twin-<date>)
set -uo pipefail
cd "$(dirname "$0")/.."
out="gpu-check-twin-$(date +%Y%m%d-%H%M%S)"
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="$2"; shift ;;
    *) echo "gpu_twin: unknown argument $1 (use --out DIR)" >&2; exit 2 ;;
  esac
  shift
done
# the image's versions, as the device tool's notes read them in 2026-11: Python 3.12.3 (pyenv's 3.12 here),
# torch 2.11.0+cu130, torchvision 0.26.0, numpy 2.5.2; the other packages at the registry's newest
TORCH=2.11.0 TORCHVISION=0.26.0 NUMPY=2.5.2
twin=${RSBKIT_TWIN_DIR:-$HOME/.cache/rsbkit/gpu-twin}
py312=""
for candidate in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.12*/bin/python3.12 "$(command -v python3.12 || true)"; do
  [ -x "$candidate" ] && { py312=$candidate; break; }
done
[ -n "$py312" ] || { echo "gpu_twin: no Python 3.12 found (pyenv install 3.12, or put python3.12 on PATH)" >&2; exit 2; }
mkdir -p "$out" && out=$(cd "$out" && pwd)
log="$out/twin.log"
say() { echo "$@" | tee -a "$log"; }
start=$(date +%s)
say "gpu_twin $(date -u +%FT%TZ) on $(hostname): $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), avx512 flags: $(grep -c avx512 /proc/cpuinfo)"
pinned() {  # the twin holds the image's versions and every package below
  "$twin/bin/python" -c '
import sys
import numpy, pandas, scipy, skimage, torch, torchvision, yaml
sys.exit(not (torch.__version__.split("+")[0], torchvision.__version__.split("+")[0], numpy.__version__) == tuple(sys.argv[1:]))
' "$TORCH" "$TORCHVISION" "$NUMPY" 2>/dev/null
}
if [ ! -x "$twin/bin/python" ] || ! pinned; then
  say "building the twin in $twin (once; several GB)"
  [ -x "$twin/bin/python" ] || "$py312" -m venv "$twin" || exit 2
  "$twin/bin/python" -m pip install -q --upgrade pip >> "$log" 2>&1
  # the image's packages that rsbkit's core, the check and the tests reach (all on the image: the device tool's
  # KINDS.md lists them), the CUDA builds of torch and torchvision as the image has them
  "$twin/bin/python" -m pip install -q "torch==$TORCH" "torchvision==$TORCHVISION" "numpy==$NUMPY" pandas pyyaml \
    pillow scipy scikit-image huggingface_hub safetensors pytest pytest-timeout pytest-xdist psutil >> "$log" 2>&1 \
    || { say "gpu_twin: pip could not build the twin (see $log)"; exit 2; }
  pinned || { say "gpu_twin: the twin does not hold torch $TORCH, torchvision $TORCHVISION and numpy $NUMPY"; exit 2; }
fi
[ -n "$(ls .gpu-wheels/timm-*.whl 2>/dev/null)" ] || bash scripts/gpu_wheels.sh >> "$log" 2>&1 \
  || { say "gpu_twin: scripts/gpu_wheels.sh could not fetch timm"; exit 2; }
"$twin/bin/python" -m pip install -q --no-deps --force-reinstall .gpu-wheels/timm-*.whl >> "$log" 2>&1 || exit 2
for missing in plotly papermill jupyterlab ipywidgets kaleido submitit playwright; do  # the image has none of them
  "$twin/bin/python" -m pip uninstall -q -y "$missing" >/dev/null 2>&1
done
"$twin/bin/python" - <<'EOF' | tee -a "$log"
import importlib.util, platform, sys
import numpy, pandas, scipy, skimage, timm, torch, torchvision
print(f"twin: Python {platform.python_version()}, torch {torch.__version__} (CUDA build {torch.version.cuda}), "
      f"torchvision {torchvision.__version__}, numpy {numpy.__version__}, pandas {pandas.__version__}, "
      f"scipy {scipy.__version__}, scikit-image {skimage.__version__}, timm {timm.__version__}")
present = [m for m in ("plotly", "papermill", "jupyter", "ipywidgets", "kaleido", "submitit", "playwright")
           if importlib.util.find_spec(m)]
print("absent as on the image: " + ("yes" if not present else f"NO, present: {present}"))
sys.exit(1 if present else 0)
EOF
[ "${PIPESTATUS[0]}" -eq 0 ] || exit 1
export PYTHONPATH="$PWD" PYTHON="$twin/bin/python"
failed=()
say "== 1. gpu_check.sh --dry-run"
t0=$(date +%s)
bash scripts/gpu_check.sh --dry-run --out "$out/dry-run" >> "$log" 2>&1 || failed+=("dry run")
say "   $(( $(date +%s) - t0 )) s: $(grep -E '^[0-9]+ ok' "$out/dry-run/summary.md" 2>/dev/null || echo 'no summary')"
say "== 2. tests/core/test_input*.py"
t0=$(date +%s)
"$twin/bin/python" -m pytest -q -p no:cacheprovider -n 2 tests/core/test_input.py tests/core/test_input_faults.py \
  >> "$log" 2>&1 || failed+=("input tests")
say "   $(( $(date +%s) - t0 )) s: $(grep -E '[0-9]+ (passed|failed)' "$log" | tail -1)"
say "== 3. two-rank gloo probes"
t0=$(date +%s)
"$twin/bin/python" -m pytest -q -p no:cacheprovider -n 2 tests/core/test_distributed.py \
  -k "two_processes_match_one or non_finite_loss_on_one_rank or batchnorm_statistics_are_averaged" >> "$log" 2>&1 \
  || failed+=("gloo probes")
say "   $(( $(date +%s) - t0 )) s: $(grep -E '[0-9]+ (passed|failed)' "$log" | tail -1)"
if [ ${#failed[@]} -eq 0 ]; then
  say "gpu_twin: passed in $(( $(date +%s) - start )) s (log: $log)"
else
  say "gpu_twin: FAILED: ${failed[*]} in $(( $(date +%s) - start )) s (log: $log)"
  exit 1
fi
