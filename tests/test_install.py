"""An installed rsbkit (a wheel, not the source checkout) finds and runs its own notebooks: the studies
run from any directory, through the notebooks shipped as package data (rsbkit/_notebooks)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ROOT


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """rsbkit built as a wheel and installed into a folder of its own (its dependencies are the venv's)."""
    base = tmp_path_factory.mktemp("installed")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                            str(base / "wheel"), str(ROOT)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    [wheel] = (base / "wheel").glob("rsbkit-*.whl")
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(base / "site"),
                              str(wheel)], capture_output=True, text=True)
    assert install.returncode == 0, install.stderr
    return base / "site"


def _run(installed: Path, cwd: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """A command with the installed copy first on the path, from a folder that is not the checkout."""
    env = {**os.environ, "PYTHONPATH": str(installed)}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout)


def test_the_wheel_ships_every_notebook_and_the_library_finds_them(installed, tmp_path):
    shipped = sorted(str(p.relative_to(installed / "rsbkit" / "_notebooks")) for p in (installed / "rsbkit" / "_notebooks").rglob("*.ipynb"))
    source = sorted(str(p.relative_to(ROOT / "notebooks")) for p in (ROOT / "notebooks").rglob("*.ipynb")
                    if ".ipynb_checkpoints" not in p.parts)
    assert shipped == source
    code = ("import rsbkit, rsbkit.model_studies as m, rsbkit.sweep as s; print(rsbkit.__file__); "
            "print(s.find_notebook(m.TRAIN_NOTEBOOK)); print(s.find_notebook('studies/seed_variance.ipynb'))")
    out = _run(installed, tmp_path, "-c", code)
    assert out.returncode == 0, out.stderr
    module, train, seeds = out.stdout.split()
    assert Path(module).parent == installed / "rsbkit"  # the installed copy, not the checkout
    assert train == str(installed / "rsbkit" / "_notebooks" / "procedures" / "train.ipynb")
    assert seeds == str(installed / "rsbkit" / "_notebooks" / "studies" / "seed_variance.ipynb")
    bad = _run(installed, tmp_path, "-m", "rsbkit", "run", "notebooks/procedures/trian.ipynb")
    assert bad.returncode == 2 and "notebook notebooks/procedures/trian.ipynb does not exist" in bad.stderr
    assert "notebooks/procedures/train.ipynb" in bad.stderr  # the ones it has, named


def test_a_study_runs_from_the_installed_package(installed, tmp_path):
    """The seed study, as its notebook documents it, from a folder holding only a sweep file: the study
    notebook and the train notebook its sweep names both come from the package."""
    sweep = tmp_path / "seeds.yaml"
    sweep.write_text(yaml.safe_dump(dict(
        notebook="notebooks/procedures/train.ipynb", out="runs/sweeps/seeds",
        parameters=dict(recipe="a3", overrides=dict(model="resnet10t", epochs=1, warmup_epochs=0, batch_size=32,
                                                    train_res=32, test_res=32),
                        limit_train=64, limit_val=32, device="cpu", workers=0),
        seeds=[0, 1])))
    out = _run(installed, tmp_path, "-m", "rsbkit", "run", "notebooks/studies/seed_variance.ipynb", "-p", "sweep", "seeds.yaml",
               "--out", "runs/sweeps/seeds")
    assert out.returncode == 0, out.stdout + out.stderr
    assert str(installed / "rsbkit" / "_notebooks" / "studies" / "seed_variance.ipynb") in out.stdout
    stats = json.loads((tmp_path / "runs/sweeps/seeds/seed_stats.json").read_text())
    assert stats["n"] == 2 and sorted(stats["seeds"]) == [0, 1]
    for seed in (0, 1):
        point = tmp_path / f"runs/sweeps/seeds/seed={seed}"
        result = json.loads((point / "result.json").read_text())
        assert result["status"] == "completed" and result["seed"] == seed
        assert result["code_version"] == "rsbkit 0.1.0"  # trained by the installed copy (outside git)
        assert (point / "train.ipynb").is_file()
