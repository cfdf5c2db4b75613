#!/usr/bin/env bash
# Create the project's virtual environment (.venv) if missing and install rsbkit
# with its notebook and dev extras. Re-installs only when pyproject.toml changes.
#   PYTHON=python3.12 bash scripts/setup.sh   # choose the interpreter (>= 3.10)
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
    || { echo "setup: $python is $("$python" --version 2>&1); rsbkit needs Python >= 3.10 (set PYTHON=...)" >&2; exit 2; }
  echo "setup: creating .venv with $("$python" --version 2>&1)"
  "$python" -m venv .venv
fi
stamp=.venv/.rsbkit-installed
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing rsbkit[notebooks,dev] into .venv (torch is large: a few minutes the first time)"
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet --no-compile --editable ".[notebooks,dev]"
  # Bytecode for every installed module, compiled on every core (pip compiles on one) and also for packages
  # installed before. Where PYTHONDONTWRITEBYTECODE=1 is set (this project's machines set it), Python never
  # writes a .pyc itself: without these, every process compiled torch, timm and jupyter from source at each start
  # (`import torch, timm` 11.9 s against 5.0 s on 2 cores; the suite starts one for every notebook, torchrun worker and Slurm job). About 30 s.
  # The exit status is ignored: a few of torch's test helpers use Python 3.12 syntax and do not compile on 3.11.
  echo "setup: compiling the installed modules to bytecode"
  .venv/bin/python -m compileall -q -j 0 "$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" >/dev/null || true
  echo "$want" > "$stamp"
fi
# rsbkit's own bytecode (into rsbkit/**/__pycache__, git-ignored; only changed files recompile): 0.7 s less at
# every process start where Python may not write it itself (PYTHONDONTWRITEBYTECODE=1)
.venv/bin/python -m compileall -q rsbkit >/dev/null || true
