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
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing rsbkit[notebooks,dev] into .venv (torch is large: a few minutes the first time)"
  .venv/bin/python -m pip install --quiet --upgrade pip
  # --no-compile: Python compiles the modules a process imports when it first imports them (a fraction of
  # torch's and jupyter's files), instead of pip compiling every file at install
  .venv/bin/python -m pip install --quiet --no-compile --editable ".[notebooks,dev]"
  echo "$want" > "$stamp"
fi
