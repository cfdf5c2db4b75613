"""Relative paths as a notebook user writes them: from a kernel in notebooks/ or notebooks/explore/ (JupyterLab starts
it there), a recipe, a dataset folder or a run folder named from the repository's root is found, and new run folders go
to the repository's runs/, not a runs/ beside the notebook."""
from __future__ import annotations

from pathlib import Path

import pytest
from conftest import ROOT

from rsbkit.core.paths import find_path, output_path, project_root, runs_root
from rsbkit.core.recipes import load_recipe
from rsbkit.core.runs import stamped_folder

pytestmark = pytest.mark.cost(2)


@pytest.mark.parametrize("kernel, up", [("notebooks", "../"), ("notebooks/explore", "../../"), (".", "")])
def test_paths_from_where_the_kernel_runs(kernel, up, monkeypatch):
    monkeypatch.chdir(ROOT / kernel)
    assert project_root() == ROOT
    assert find_path("params/demo.yaml") == Path(f"{up}params/demo.yaml") and load_recipe("params/demo.yaml").name == "demo"
    assert runs_root() == Path(f"{up}runs") and stamped_folder("x").parent == Path(f"{up}runs")
    assert output_path("runs/sweeps/seeds") == Path(f"{up}runs/sweeps/seeds") and output_path("elsewhere/x") == Path("elsewhere/x")
    from rsbkit.workbook.table import load_runs

    table = load_runs("tests/core/fixtures/timm_run")  # a run folder named from the root
    assert len(table) == 1 and table.iloc[0]["source"] == "timm"


def test_outside_the_checkout_paths_are_as_given(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert find_path("params/demo.yaml") == Path("params/demo.yaml") and runs_root() == Path("runs")
    (tmp_path / "params").mkdir()
    (tmp_path / "params" / "demo.yaml").write_text("base: a3\nepochs: 20\n")
    assert load_recipe("params/demo.yaml").epochs == 20  # what exists where the process runs comes first
