"""Issue 47 items 2 and 3 in the panel: "Try it" starts a trial in the background (the click returns at once), a
second click while it runs is refused in the panel, the curves grow per epoch, and the run ends beside the reference
run at the same scale (run once, by the first try, and reused) with what one seed can and cannot tell and the number
of seeds a comparison needs (from the seed study's arithmetic). Training is a fake that writes a run folder's
records: milliseconds, no torch."""
from __future__ import annotations

import json
import math
import threading
from pathlib import Path

import pytest

from rsbkit.core.runs import RunFolder, write_metrics, write_recipe, write_result
from rsbkit.explore import change, trial, widgets
from rsbkit.workbook import run_studies, study_stats

DEMO = change.start_recipe("params/demo.yaml")
SMOOTHED = dict(smoothing=0.1, threshold_on=False, threshold=0.2)  # the loss explorer, smoothing 0.1: a change


class FakeTrain:
    """train() as far as the panel sees it: the epochs' rows to on_epoch, then a run folder's recipe.yaml,
    metrics.csv and result.json; each call held on `gate` until the test opens it."""

    def __init__(self, top1=(50.0, 60.0)):
        self.calls, self.gate, self.top1 = [], threading.Event(), dict(top1=top1)

    def __call__(self, recipe, data, out_dir, *, limit_train, limit_val, on_epoch=None, **_settings):
        self.calls.append((recipe, Path(out_dir)))
        assert self.gate.wait(30)
        top1 = self.top1["top1"] if "reference" not in recipe.name else (48.0, 59.0)
        rows = [dict(epoch=e + 1, lr=0.008, train_loss=1.0 - 0.1 * e, val_top1=t) for e, t in enumerate(top1)]
        for row in rows:
            if on_epoch is not None:
                on_epoch(row)
        run = RunFolder(Path(out_dir))
        run.path.mkdir(parents=True, exist_ok=True)
        write_recipe(run, recipe, {})
        write_metrics(run, rows)
        result = dict(status="completed", recipe=recipe.name, final_top1=top1[-1],
                      data=dict(name=data, limit_train=limit_train, limit_val=limit_val))
        write_result(run, result)
        return result


@pytest.fixture
def fake(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    monkeypatch.setattr(trial, "runs_root", lambda: runs)
    train = FakeTrain()
    monkeypatch.setattr(trial, "train", train)
    yield train
    train.gate.set()
    if trial.running() is not None:
        trial.running().wait(30)


def loss_panel(**kw):
    explorer = widgets.loss_explorer(5, smoothing=0.0)
    return explorer, widgets.ChangePanel("params/demo.yaml", {"loss": explorer}, **kw)


def test_try_it_runs_in_the_background_refuses_a_second_click_and_ends_beside_the_reference(fake):
    explorer, panel = loss_panel(seeds=lambda diff: f"SEEDS for {diff:+.2f}")
    explorer.set(**SMOOTHED)
    assert "2 epoch(s) on 2,000 training images" in panel.scale_note.value
    assert "about 1.5 minutes on 2 cores" in panel.scale_note.value
    panel.button.click()  # returns at once: the fake is held
    first = panel.trial
    assert first is not None and not first.done and first.reference_ran
    assert first.reference == fake_root(fake) / "explore" / "reference-demo-2ep-2000-500-default"
    assert "is missing, so this first try runs it too" in panel.progress.value
    assert panel.notice.value == ""

    explorer.set(smoothing=0.2)  # the widgets stay live while it runs
    panel.button.click()  # refused in the panel, not queued
    assert "Not started: a trial is running in" in panel.notice.value and panel.trial is first
    assert len(fake.calls) == 1

    fake.gate.set()
    first.wait(30)
    assert first.done and first.error is None and first.phase == "done"
    assert [r.name for r, _ in fake.calls] == ["demo-trial", "demo-reference"]
    assert fake.calls[0][0].smoothing == 0.1  # the change as it was at the click
    assert fake.calls[1][0] == trial.reference_recipe(DEMO, trial.QUICK) and fake.calls[1][0].smoothing == DEMO.smoothing
    # the curves: this change and the reference, top-1 and loss each
    fig = panel.curves.outputs[0]["data"]["application/vnd.plotly.v1+json"]
    assert [t["name"] for t in fig["data"]] == ["this change"] * 2 + ["reference (demo, no change)"] * 2
    assert fig["data"][0]["y"] == [50.0, 60.0] and fig["data"][2]["y"] == [48.0, 59.0]
    assert "run now: it is reused from now on" in panel.progress.value and "report.ipynb" in panel.progress.value
    assert panel.notice.value == ""  # the refusal is over with the run
    text = panel.reading.value
    assert panel.reading.layout.display is None
    assert "this change 60.00%, the reference (demo, no change) 59.00%: +1.00 points" in text
    assert "What one seed at this scale can tell" in text and "What it cannot tell" in text
    assert text.endswith("SEEDS for +1.00")

    # a second try reuses the reference: it runs the change only, and draws the reference from its folder at once
    fake.gate.clear()
    second = panel.try_it()
    assert second is not None and not second.reference_ran and second.reference == first.reference
    assert second.reference_result["final_top1"] == 59.0
    assert "beside the reference in" in panel.progress.value and "missing" not in panel.progress.value
    assert [r["val_top1"] for r in panel.rows["reference (demo, no change)"]] == [48.0, 59.0]
    fake.gate.set()
    second.wait(30)
    assert len(fake.calls) == 3 and fake.calls[2][0].smoothing == 0.2


def fake_root(_fake) -> Path:
    return trial.runs_root()


def test_a_state_that_is_not_a_recipe_is_refused_in_the_panel(fake):
    ops = widgets.op_explorer({"grey": _grey()})
    panel = widgets.ChangePanel("params/demo.yaml", {"op": ops})
    ops.set(magnitude=7.5)
    assert panel.try_it() is None and not fake.calls
    assert "Not started: not a recipe, so nothing to try: magnitude 7.5" in panel.notice.value


def _grey():
    from PIL import Image

    return Image.new("RGB", (32, 32), (128, 128, 128))


def test_a_reference_is_reused_only_for_that_recipe_at_that_scale(fake):
    scale = trial.Scale(epochs=2, limit_train=200, limit_val=100)
    folder, found = trial.find_reference(DEMO, scale)
    assert found is None and folder.name == "reference-demo-2ep-200-100-default"
    fake.gate.set()
    fake(trial.reference_recipe(DEMO, scale), "default", folder, limit_train=200, limit_val=100)
    assert trial.find_reference(DEMO, scale) == (folder, json.loads((folder / "result.json").read_text()))
    assert [r["epoch"] for r in trial.epoch_rows(folder)] == [1, 2] and trial.epoch_rows(None) == []
    # another base, or the base edited since: not that run; the next free folder
    edited = DEMO.replace(smoothing=0.3)
    assert trial.find_reference(edited, scale) == (folder.with_name(folder.name + "-2"), None)
    assert trial.find_reference(DEMO, trial.Scale(epochs=3))[0].name == "reference-demo-3ep-2000-500-default"
    assert trial.Scale(data="/data/my set").key == "2ep-2000-500-_data_my_set"


def test_the_time_stated_is_the_measured_one_and_only_where_measured():
    assert trial.QUICK.duration(DEMO) == "about 1.5 minutes on 2 cores (measured: 93 s on a loaded 2-core host)"
    assert "not measured" in trial.Scale(epochs=4).duration(DEMO)
    assert "not measured" in trial.QUICK.duration(change.start_recipe("a1"))


def test_what_one_seed_can_tell_without_a_seed_count_and_after_a_failure():
    t = trial.Trial(DEMO, Path("runs/explore/x"), trial.QUICK, base=DEMO, result={"final_top1": 61.2},
                    reference_result={"final_top1": 60.0})
    text = trial.one_seed_text(t)
    assert "+1.20 points" in text and "one image is 0.20 points" in text and "one draw" in text
    assert "notebooks/studies/seed_variance.ipynb" in text  # names the study that gives the count
    t.error = RuntimeError("out of memory")
    assert trial.one_seed_text(t) == "The trial failed: RuntimeError: out of memory"
    assert "no comparison without both" in trial.one_seed_text(trial.Trial(DEMO, Path("x"), trial.QUICK, result={}))


def test_the_seed_count_is_the_seed_studys_arithmetic():
    """seeds_needed: the first n where compare_means' detectable difference (80% power) reaches the difference; the
    committed demo seed study (5 seeds, sd 0.225) stands in, and the text says it is a stand-in and the fewest."""
    stats = run_studies.load_seed_stats("findings/seed_stats.json")
    n = study_stats.seeds_needed(stats, 0.45)
    assert n == 7
    assert study_stats.compare_means(0.45, n, n, seed=stats).detectable <= 0.45
    assert study_stats.compare_means(0.45, n - 1, n - 1, seed=stats).detectable > 0.45
    assert study_stats.seeds_needed(stats, -2.0) == 1 and study_stats.seeds_needed(stats, 0.0) is None
    assert study_stats.seeds_needed(stats, 0.001) is None  # past 1,000 seeds: not practical
    text = run_studies.trial_seeds(0.3)
    assert "stand-in" in text and "more than 0.88 points" in text and "needs 7" in text
    assert f"with {study_stats.seeds_needed(stats, 0.3)} seeds per recipe" in text and "likely larger" in text
    assert "1 seed per recipe" in run_studies.trial_seeds(-1.5) and "end level" in run_studies.trial_seeds(0.0)
    assert math.isclose(study_stats.compare_means(0.0, 1, 1, seed=stats).band, 0.8845, abs_tol=1e-3)


@pytest.mark.parametrize("name", ["augmentations", "losses", "resolution", "schedule"])
def test_every_explorer_notebook_gives_its_panels_the_seed_count(name):
    """The notebooks pass the workbook's seed arithmetic in (explore may not import the workbook): each panel's
    reading then ends with the number of seeds. Read from the source: no notebook runs here."""
    cells = json.loads((Path(__file__).resolve().parents[2] / "notebooks" / "explore" / f"{name}.ipynb").read_text())["cells"]
    code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    panels = code.count("widgets.ChangePanel(")
    assert panels and code.count("seeds=trial_seeds)") == panels
    assert "from rsbkit.workbook.run_studies import trial_seeds" in code
