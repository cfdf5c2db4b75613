"""The code passes the project's lint rules (pyproject.toml [tool.ruff])."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path


def test_ruff_clean(root):
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    out = subprocess.run([ruff, "check", "rsbkit", "tests", "scripts", "benchmarks"], cwd=root, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
