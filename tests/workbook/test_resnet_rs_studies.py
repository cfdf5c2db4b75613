"""ResNet-RS's additive study and weight-decay study: what each step builds, the tables and verdicts on known
numbers (milliseconds), and both notebooks under papermill at smoke size through the sweep runner."""
from __future__ import annotations

import json
import math

import nbformat
import pandas as pd
import pytest
import timm

from rsbkit.core.errors import RecipeError
from rsbkit.core.models import create_model
from rsbkit.core.optim import lr_schedule
from rsbkit.core.recipes import Recipe, load_recipe
from rsbkit.workbook.resnet_rs_studies import (
    additive_split,
    additive_table,
    scaled_sweep,
    step_changes,
    weight_decay_shrinkage,
    weight_decay_table,
    weight_decay_verdict,
    with_top1,
)
from rsbkit.workbook.study_stats import SeedStats, t_quantile, welch_df
from rsbkit.workbook.sweep import load_sweep, pending

pytestmark = pytest.mark.cost(60)  # seconds in the suite on 2 cores (the two notebooks): costliest files start first

STATS = SeedStats(n=5, mean=81.7, std=0.25, min=81.4, max=82.0)


def runs_of(cells: dict, **columns) -> pd.DataFrame:
    """A run table as load_runs gives it: {(step_index, step, paper, extra...): [top-1 of each seed]}."""
    rows = []
    for (index, step, paper), values in cells.items():
        for seed, v in enumerate(values):
            rows.append(dict(status="completed", step_index=index, step=step, step_paper=paper, seed=seed, final_top1=v,
                             model_ema=False, final_ema_top1=None, **columns))
    return pd.DataFrame(rows)


# ------------------------------------------------------------------ what the steps build


def test_each_committed_step_changes_only_what_it_names():
    """Built, not read from the names: the additive study's recipes differ step to step in exactly the step's
    fields; SE adds one SEModule per block and nothing else of the network; ResNet-D swaps the stem for three
    convolutions and adds an average pool to each downsampling shortcut, keeping the SE modules."""
    changes = step_changes(load_sweep("params/sweeps/additive.yaml")).set_index("step")
    assert changes["as_declared"].all()
    assert list(changes.index[changes["kind"] == "architecture"]) == ["se", "resnet_d"]
    assert changes.loc["longer", "recipe_changes"] == "epochs: 10 -> 20"
    assert changes.loc["less_wd", "recipe_changes"] == "weight_decay: 0.0001 -> 4e-05"
    assert changes.loc["stochastic_depth", "model_changes"] == "+7 DropPath"  # the first block's rate is 0
    assert changes.loc["dropout", "model_changes"] == "-"  # timm's ResNet drops out in its head function
    assert "+8 SEModule" in changes.loc["se", "model_changes"]
    resnet_d = changes.loc["resnet_d", "model_changes"]
    assert "+3 AvgPool2d" in resnet_d and "SEModule" not in resnet_d


def test_attn_layer_se_on_resnet18_is_timms_seresnet18():
    def shapes(model):
        return {k: tuple(v.shape) for k, v in model.state_dict().items()}

    assert shapes(create_model(Recipe(model="resnet18", attn_layer="se"), 10)) == shapes(
        timm.create_model("seresnet18", num_classes=10))
    with pytest.raises(RecipeError, match="attn_layer.*'sex'.*did you mean 'se'"):
        Recipe(model="resnet18", attn_layer="sex")
    with pytest.raises(RecipeError, match="attn_layer='se'.*not 'test_vit'"):
        create_model(Recipe(model="test_vit", attn_layer="se"), 10)


def test_scaled_sweep_takes_seeds_and_shrinks_to_smoke():
    sweep = scaled_sweep("params/sweeps/additive.yaml", seeds=[3], scale="smoke")
    assert sweep.out.name == "additive-smoke" and len(sweep.points) == 11
    by_step = {p.step["name"]: p.parameters for p in sweep.points}
    assert by_step["baseline"]["overrides"]["epochs"] == 1 and by_step["longer"]["overrides"]["epochs"] == 2
    assert {p["seed"] for p in by_step.values()} == {3}
    assert (by_step["se"]["limit_train"], by_step["se"]["limit_val"]) == (512, 256)
    with pytest.raises(Exception, match="scale='tiny'"):
        scaled_sweep("params/sweeps/additive.yaml", scale="tiny")


def test_a_half_done_study_runs_only_the_points_left(tmp_path):
    """steps x grid x seeds: with some points completed, a rerun has the others left, in order."""
    sweep = load_sweep("params/sweeps/weight_decay.yaml", out=tmp_path)
    assert len(sweep.points) == 5 * 3 * 2 + 2 * 3  # 2 seeds a cell, 3 in the rows of SD and RA
    for p in sweep.points[:7]:
        p.run_dir.mkdir()
        (p.run_dir / "sweep_point.json").write_text(json.dumps(dict(status="completed")))
    left = pending(sweep)
    assert [p.name for p in left] == [p.name for p in sweep.points[7:]]
    assert left[0].name == "01-label_smoothing_weight_decay=0.0001_seed=1"


# ------------------------------------------------------------------ tables and verdicts on known numbers


def test_with_top1_reads_the_ema_where_the_run_trained_one():
    runs = pd.DataFrame(dict(status="completed", final_top1=[80.0, 81.0], final_ema_top1=[None, 82.5],
                             model_ema=[False, True]))
    out = with_top1(runs)
    assert list(out["top1"]) == [80.0, 82.5] and list(out["read_from"]) == ["model", "ema"]


def test_additive_table_deltas_bands_and_the_papers_split():
    runs = runs_of({(0, "baseline", 79.0): [80.0, 80.2], (1, "cosine", None): [80.6, 80.8],
                    (2, "less_wd", 82.2): [81.0, 81.2], (3, "se", 83.4): [81.5, 81.5]})
    changes = pd.DataFrame(dict(step_index=[0, 1, 2, 3], kind=["training"] * 3 + ["architecture"]))
    table = additive_table(with_top1(runs), STATS, changes)
    assert list(table["step"]) == ["baseline", "cosine", "less_wd", "se"]
    assert table["delta"].round(6).tolist()[1:] == [0.6, 0.4, 0.4]
    # the band: the seed study's for 2 against 2 seeds (t with its n - 1 df x 0.25 x 1) against the steps' own
    # spread (Welch: 2 degrees of freedom here), the wider kept
    seed_t, own_t = t_quantile(STATS.n - 1), t_quantile(welch_df(math.sqrt(0.02), 2, math.sqrt(0.02), 2))
    assert table["band"].iloc[1] == pytest.approx(max(seed_t * 0.25, own_t * math.sqrt(0.02 / 2 + 0.02 / 2)))
    assert list(table["beyond_noise"]) == [False, False, False, False]  # 0.6 with 2 seeds a step: not enough
    assert list(table["verdict"][1:]) == ["cannot tell at this number of seeds"] * 3
    assert math.isnan(table["paper_delta"].iloc[1]) and table["paper_delta"].iloc[2] == pytest.approx(3.2)
    recorded = runs.assign(model=["resnet18"] * 6 + ["seresnet18"] * 2)  # read from runs: the kind from their recipes
    assert list(additive_table(with_top1(recorded), STATS)["kind"]) == list(table["kind"])
    split = additive_split(table)
    assert split["training_gain"] == pytest.approx(1.0) and split["architecture_gain"] == pytest.approx(0.4)
    assert split["training_share"] == pytest.approx(1.0 / 1.4)
    assert split["paper_training_share"] == pytest.approx(3.2 / 4.4)  # ResNet-RS's "3/4"


def test_weight_decay_table_marks_each_rows_best_and_answers_the_claim():
    runs = pd.concat([runs_of({(0, "none", None): [81.0, 81.2]}, weight_decay=1e-4),
                      runs_of({(0, "none", None): [80.4, 80.6]}, weight_decay=1e-5),
                      runs_of({(1, "dropout", None): [80.0, 80.2]}, weight_decay=1e-4),
                      runs_of({(1, "dropout", None): [81.4, 81.6]}, weight_decay=1e-5)], ignore_index=True)
    cells = weight_decay_table(with_top1(runs), STATS)
    best = cells[cells["best"]].set_index("step")["weight_decay"]
    assert best.to_dict() == {"none": 1e-4, "dropout": 1e-5}
    # the paper's own pair (here 1e-5 stands for it) with every regularizer: +1.40, beyond noise
    verdict = weight_decay_verdict(cells, 1e-4, STATS, paper_wd=1e-5)
    assert "weight decay 1e-05 gives 81.50 against 80.10 at the recipe's 0.0001: +1.40 points against the recipe" in verdict
    assert "beyond noise" in verdict and "which supports ResNet-RS's claim" in verdict
    assert "goes from 0.0001 with none to 1e-05 with all of them (falls)" in verdict
    flat = runs.assign(final_top1=[81.0, 81.2, 81.0, 81.1, 81.0, 81.2, 81.0, 81.1])
    assert "which says nothing of ResNet-RS's claim either way" in \
        weight_decay_verdict(weight_decay_table(with_top1(flat), STATS), 1e-4, STATS, paper_wd=1e-5)
    assert "the grid's next smaller weight decay 1e-05 gives 81.50" in weight_decay_verdict(cells, 1e-4, STATS)  # no 4e-5 here
    assert "no verdict" in weight_decay_verdict(cells, 1e-5, STATS)  # nothing below the recipe's


def test_weight_decay_shrinks_the_demo_baselines_weights_by_a_few_percent():
    """What a weight-decay study of 470 steps can test: SGD's decay through momentum, summed over the cosine schedule."""
    base = load_recipe("params/torchvision_demo.yaml", sched="cosine")
    shrink = weight_decay_shrinkage(base, 47)
    lrs = lr_schedule(base, 47, 0.1)
    assert len(lrs) == 470 and shrink == pytest.approx(1 - math.prod(1 - lr * 1e-4 / 0.1 for lr in lrs))
    assert 0.02 < shrink < 0.03 and weight_decay_shrinkage(base.replace(weight_decay=1e-5), 47) < shrink / 9


# ------------------------------------------------------------------ the notebooks under papermill


def figures(path) -> int:
    nb = nbformat.read(path, as_version=4)
    return sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)


def smoke_sweep(tmp_path, body: str):
    """A sweep file of train-notebook points at smoke size (64 / 32 images) with `body` (steps, grid, seeds)."""
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(f"notebook: notebooks/procedures/train.ipynb\nout: {tmp_path / 'points'}\nparameters: "
                     "{recipe: params/smoke.yaml, device: cpu, workers: 0, limit_train: 64, limit_val: 32}\n" + body)
    return sweep


def test_additive_notebook_runs_the_steps_and_reads_ema_runs_by_their_ema(tmp_path, cli):
    sweep = smoke_sweep(tmp_path, """steps:
  - {name: baseline, paper: 79.0}
  - {name: ema, model_ema: true, model_ema_decay: 0.5}
  - {name: se, attn_layer: se, paper: 83.4}
seeds: [0]
""")
    out = tmp_path / "study"
    res = cli("run", "notebooks/studies/additive.ipynb", "-p", "sweep", str(sweep), "-p", "scale", "smoke",
              "-p", "jobs", "2", "-p", "out_dir", str(out), "--out", str(out))
    assert res.returncode == 0, res.stderr[-3000:]
    table = pd.read_csv(out / "additive.csv")
    assert list(table["step"]) == ["baseline", "ema", "se"] and list(table["kind"]) == ["training", "training", "architecture"]
    assert list(table["read_from"]) == ["model", "ema", "ema"] and table["mean"].between(0, 100).all()
    runs = pd.read_csv(out / "additive_runs.csv")
    ema_run = runs[runs["step"] == "ema"].iloc[0]
    assert ema_run["top1"] == ema_run["final_ema_top1"]  # result.json's EMA top-1, not the live model's
    assert pd.read_csv(out / "additive_changes.csv")["as_declared"].all()
    assert figures(out / "additive.ipynb") == 1
    assert (tmp_path / "points-smoke" / "02-se_seed=0" / "result.json").is_file()  # smoke points kept apart


def test_weight_decay_notebook_crosses_steps_with_weight_decay(tmp_path, cli):
    sweep = smoke_sweep(tmp_path, """steps:
  - {name: none}
  - {name: label_smoothing, smoothing: 0.1}
grid:
  weight_decay: [0.02, 0.002]
seeds: [0]
""")
    out = tmp_path / "study"
    res = cli("run", "notebooks/studies/weight_decay.ipynb", "-p", "sweep", str(sweep), "-p", "jobs", "2",
              "-p", "out_dir", str(out), "--out", str(out))
    assert res.returncode == 0, res.stderr[-3000:]
    cells = pd.read_csv(out / "weight_decay.csv")
    assert len(cells) == 4 and cells.groupby("step")["best"].sum().to_dict() == {"label_smoothing": 1, "none": 1}
    runs = pd.read_csv(out / "weight_decay_runs.csv")
    assert sorted(zip(runs["step"], runs["weight_decay"], runs["smoothing"])) == [
        ("label_smoothing", 0.002, 0.1), ("label_smoothing", 0.02, 0.1), ("none", 0.002, 0.0), ("none", 0.02, 0.0)]
    assert figures(out / "weight_decay.ipynb") == 1
    text = "".join(o.get("text", "") for c in nbformat.read(out / "weight_decay.ipynb", as_version=4).cells
                   if c.cell_type == "code" for o in c.outputs)
    assert "at the recipe's 0.02" in text and "ResNet-RS's claim" in text
    # each weight decay's effect with and without the regularizers (one seed, no seed study: no interval)
    assert "weight decay 0.02 against 0.002: its effect with label_smoothing minus its effect with none is" in text
    assert "cannot tell at this number of seeds" in text


def test_the_recipe_of_each_weight_decay_cell_is_its_step_plus_its_column():
    sweep = load_sweep("params/sweeps/weight_decay.yaml")
    cell = next(p for p in sweep.points if p.name == "04-dropout_weight_decay=1e-05_seed=1")
    recipe = load_recipe(cell.parameters["recipe"], **cell.parameters["overrides"])
    assert (recipe.weight_decay, recipe.drop, recipe.drop_path, recipe.smoothing, recipe.aa, recipe.sched,
            recipe.model_ema, recipe.epochs) == (1e-5, 0.25, 0.1, 0.1, "rand-m10-n2", "cosine", True, 10)
    assert cell.parameters["seed"] == 1


def test_the_tour_reads_both_studies_from_findings_or_says_how_to_run_them(tmp_path):
    from rsbkit.workbook.resnet_rs_studies import committed_findings

    empty = committed_findings(str(tmp_path))
    assert empty.additive is None and empty.weight_decay is None
    assert "notebooks/studies/additive.ipynb runs it" in empty.lines[0] and "weight_decay.ipynb" in empty.lines[1]
    runs = runs_of({(0, "baseline", 79.0): [80.0, 80.2], (1, "less_wd", 82.2): [81.0, 81.2], (2, "se", 83.4): [81.5, 81.5]},
                   model="resnet18")
    runs.loc[runs["step"] == "se", "model"] = "seresnet18"
    additive_table(with_top1(runs), STATS).to_csv(tmp_path / "additive.csv", index=False)
    found = committed_findings(str(tmp_path))
    assert found.split["training_gain"] == pytest.approx(1.0)
    assert found.lines[0].startswith("Additive study: Baseline 80.10 -> 81.10 after the training changes")
