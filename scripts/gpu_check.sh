#!/usr/bin/env bash
# The GPU check: what the first GPU hour must show, in at most 6 minutes on one H100/H200 (--quick: about 2).
#   PYTHONPATH=. bash scripts/gpu_check.sh [--quick] [--dry-run] [--out DIR]
# Runs from the source tree with only torch, torchvision and timm installed; every step is bounded by
# `timeout`; all output goes under DIR (default gpu-check-<date>): one JSON and log per step, summary.md.
# --dry-run: every step at tiny sizes on the CPU, the extras hidden (what the test suite runs).
set -uo pipefail
cd "$(dirname "$0")/.."
quick="" dry="" out="gpu-check-$(date +%Y%m%d-%H%M%S)"
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=--quick ;;
    --dry-run) dry=--dry-run ;;
    --out) out="$2"; shift ;;
    *) echo "gpu_check: unknown argument $1 (use --quick, --dry-run, --out DIR)" >&2; exit 2 ;;
  esac
  shift
done
python=${PYTHON:-python3}
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && python=.venv/bin/python
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# each step is a new process: where PYTHONDONTWRITEBYTECODE=1 is set (this project's machines set it) and torch's
# install has no bytecode, every step would compile torch and timm from source (12 s against 5 s on a 2-core
# CPU); let the first step write what it compiles
unset PYTHONDONTWRITEBYTECODE
mkdir -p "$out"
# step and its time limit, seconds (the full check: 6 minutes at most, start-up included)
steps="env:15 data:50 cuda_tests:40 race:20 census:40 bench:90 demo:30 a1_free:30 a1_capped:30 a3_jpeg:30"
[ -n "$quick" ] && steps="env:10 data:40 race:15 census:25 demo:25"
# a dry run shares a loaded CPU with the test suite: the limits there are 4x (they bound a hang, not a GPU budget)
scale=1; [ -n "$dry" ] && scale=4
{
  echo "gpu_check $(date -u +%FT%TZ) on $(hostname) $quick $dry"
  echo "ulimit -n: $(ulimit -n); /dev/shm: $(df -h /dev/shm 2>/dev/null | tail -1)"
  command -v nvidia-smi >/dev/null && nvidia-smi 2>&1 | head -20
} > "$out/env.txt"
for item in $steps; do
  step=${item%%:*} limit=$(( ${item##*:} * scale ))
  echo "== $step (limit ${limit} s)"
  timeout --kill-after=5 "$limit" "$python" scripts/gpu_check.py "$step" --out "$out" $quick $dry > "$out/$step.log" 2>&1
  rc=$?
  [ $rc -eq 124 ] || [ $rc -eq 137 ] && echo "   killed by its ${limit} s timeout" | tee -a "$out/$step.log"
  tail -1 "$out/$step.log" | cut -c1-300
done
"$python" scripts/gpu_check.py summary --out "$out" | tee "$out/summary.md"
