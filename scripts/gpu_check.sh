#!/usr/bin/env bash
# The GPU check: what the first GPU hour must show, in at most 7 minutes on one H100/H200 (--quick: under 2).
#   PYTHONPATH=. bash scripts/gpu_check.sh [--quick] [--dry-run] [--out DIR]
# Runs from the source tree with only torch, torchvision and timm installed; every step is bounded by
# `timeout`, and the whole check by its budget; all output goes under DIR (default gpu-check-<date>): one JSON and
# log per step, the run folders, and after every step summary.md, results.json and logs.tar.gz (no checkpoints,
# under 16 MiB). Where $OUT is set (a lent machine's device tool returns only what is written there) those three
# are copied there too, and nothing else. Exit status: 0 when no step failed.
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
mkdir -p "$out" && out=$(cd "$out" && pwd)
to=""
if [ -n "${OUT:-}" ]; then
  mkdir -p "$OUT" && to=$(cd "$OUT" && pwd)
  case "$out/" in "$to"/*)
    echo "gpu_check: --out $out is inside \$OUT ($to): only summary.md, results.json and logs.tar.gz go there; give another --out" >&2
    exit 2 ;;
  esac
fi
collect() { "$python" scripts/gpu_check.py collect --out "$out" ${to:+--to "$to"} $quick $dry; }
stop() {  # the check cannot go on: say why, and still leave the three results
  echo "gpu_check: $1" >&2
  echo "$1" > "$out/check-stopped.txt"
  collect > /dev/null
  exit 2
}
rm -f "$out"/*.json "$out/check-stopped.txt"  # a folder used before: its steps' results are not this check's
# timm first: below rsbkit's floor Lamb syncs or launches per parameter and every figure would be wrong. The GPU
# machine's image brings its own timm; scripts/gpu_wheels.sh fills .gpu-wheels/ with one at or above the floor
# (take the folder along: the device tool's `carry: [".gpu-wheels"]`), installed here without an index.
if ! "$python" scripts/gpu_check.py timm-floor > "$out/timm.txt" 2>&1; then
  cat "$out/timm.txt"
  if ls .gpu-wheels/timm-*.whl >/dev/null 2>&1; then
    "$python" -m pip install -q --no-index --no-deps --no-compile --target "$out/site" .gpu-wheels/*.whl \
      || stop "pip could not install .gpu-wheels/"
    export PYTHONPATH="$PWD:$out/site${PYTHONPATH#$PWD}"
    "$python" scripts/gpu_check.py timm-floor | tee -a "$out/timm.txt" \
      || stop "timm from .gpu-wheels/ is still below the floor"
  else
    stop "timm is below rsbkit's floor and .gpu-wheels/ holds none: run 'bash scripts/gpu_wheels.sh' on a machine with PyPI and take .gpu-wheels/ along"
  fi
fi
# step:limit, seconds, on one H200 (the full check: 410 s of limits; with the budget's 10 s for the results, at most 7
# minutes). Each limit bounds the step's estimated work (E, start-up included: about 5 s to import torch, timm and
# rsbkit) with room, about 1.5x:
#   env 10 (E 6: imports, nvidia-smi)    data 35 (E 25: 4,505 JPEGs written by PIL on one core)
#   cuda_tests 45 (E 20-30: pytest, the CUDA-only input tests)    race 20 (E 10: 3 x 40 trials of ~15 ms, decodes)
#   census 50 (E 30-40: 4 short trainings of ResNet-50 at 160 px, batch 256, 4 and 12 steps, one cuDNN search; the
#     controls' 16 syncs)
#   threads 50 (E 25-35: the device input path alone at 160 px, batch 256, with 1, 2 and 4 input threads: each
#     skips the batches made ahead (2 + 2 per thread + 12 workers x 4) and times 40, ~100 batches of 256)
#   bench 90 (E 50-65: rsbkit bench: model steps, both input paths, 2 x 2 end-to-end epochs of 100 steps)
#   demo 20 (E 10: 2 epochs of the demo on 12,000 arrays)    a1_free 25 (E 12: A1 at 224 px, 2 steps of 4 x 512)
#   a1_capped 35 (E 18: A1 capped at half a1_free's peak: the out-of-memory tries, then the 2 steps accumulated)
#   a3_jpeg 30 (E 18: A3 at 160 px, batch 2048 from the JPEGs: 2 steps, validation decoded on the GPU)
steps="env:10 data:35 cuda_tests:45 race:20 census:50 threads:50 bench:90 demo:20 a1_free:25 a1_capped:35 a3_jpeg:30"
budget=420  # the whole check, seconds: a step gets at most what is left of it, less 10 s to write the results
# --quick (under 2 minutes): env, data, race, census (2 and 6 steps), demo (1 epoch)
[ -n "$quick" ] && steps="env:10 data:35 race:15 census:35 demo:15" && budget=120
# a dry run shares a loaded CPU with the test suite: the limits there are 4x (they bound a hang, not a GPU budget),
# times RSBKIT_TIME_SCALE, how many times slower this host is than the suite's reference host (tests/clock.py)
scale=1; [ -n "$dry" ] && scale=$(awk -v s="${RSBKIT_TIME_SCALE:-1}" 'BEGIN { if (s + 0 < 1) s = 1; print 4 * s }')
deadline=$(awk -v l="$budget" -v s="$scale" 'BEGIN { printf "%d", l * s + 0.5 }')  # bash's SECONDS: since the start
reserve=$(awk -v s="$scale" 'BEGIN { printf "%d", 10 * s + 0.5 }')
{
  echo "gpu_check $(date -u +%FT%TZ) on $(hostname) $quick $dry"
  echo "ulimit -n: $(ulimit -n); /dev/shm: $(df -h /dev/shm 2>/dev/null | tail -1)"
  cat "$out/timm.txt"
  command -v nvidia-smi >/dev/null && nvidia-smi 2>&1 | head -20
} > "$out/env.txt"
for item in $steps; do
  step=${item%%:*} limit=$(awk -v l="${item##*:}" -v s="$scale" 'BEGIN { printf "%d", l * s + 0.5 }')
  left=$(( deadline - SECONDS - reserve - 5 ))  # 5: timeout's --kill-after
  [ "$limit" -gt "$left" ] && limit=$left
  rm -f "$out/$step.json"
  if [ "$limit" -lt 5 ]; then
    echo "== $step: not run, the check's ${budget} s budget is spent"
    printf '{"status": "skipped", "why": "the check ran out of its %s s budget before this step", "limit_s": 0}\n' \
      "$budget" > "$out/$step.json"
    continue
  fi
  echo "== $step (limit ${limit} s)"
  timeout --kill-after=5 "$limit" "$python" scripts/gpu_check.py "$step" --out "$out" --limit "$limit" $quick $dry > "$out/$step.log" 2>&1
  rc=$?
  if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
    echo "   killed by its ${limit} s timeout" | tee -a "$out/$step.log"
    printf '{"status": "failed", "why": "killed by its %s s timeout (last line: %s)", "limit_s": %s}\n' "$limit" \
      "$(grep -v '^ *killed' "$out/$step.log" | tail -1 | cut -c1-200 | tr -d '"\\')" "$limit" > "$out/$step.json"
  elif [ ! -s "$out/$step.json" ]; then
    printf '{"status": "failed", "why": "exited %s without a result", "limit_s": %s}\n' "$rc" "$limit" > "$out/$step.json"
  fi
  tail -1 "$out/$step.log" | cut -c1-300
  collect > /dev/null  # the three results after every step: a check stopped from outside still leaves them
done
collect
