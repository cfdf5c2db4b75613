"""python -m rsbkit: resolved recipes, one-line errors, a run from the command line."""
from __future__ import annotations

import yaml

from rsbkit.core.recipes import A1


def test_recipe_prints_resolved_yaml(cli):
    out = cli("recipe", "a1")
    assert out.returncode == 0 and yaml.safe_load(out.stdout) == A1.to_dict()
    out = cli("recipe", "params/a3.yaml", "--set", "lr=1e-3", "--set", "epochs=10")
    resolved = yaml.safe_load(out.stdout)
    assert (resolved["lr"], resolved["epochs"], resolved["train_res"]) == (1e-3, 10, 160)


def one_line_error(out, *needles):
    assert out.returncode == 2, out
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    for needle in needles:
        assert needle in out.stderr, (needle, out.stderr)


def test_bad_input_gives_one_line(cli):
    one_line_error(cli("recipe", "a4"), "unknown recipe 'a4'", "did you mean")
    one_line_error(cli("recipe", "a1", "--set", "lrr=1"), "unknown recipe field 'lrr'", "'lr'")
    one_line_error(cli("recipe", "a1", "--set", "crop_pct=2"), "crop_pct=2.0 is out of range")
    one_line_error(cli("train", "params/smoke.yaml", "--data", "/no/such/dir"), "dataset folder /no/such/dir does not exist")
    one_line_error(cli("train"), "the following arguments are required: config")
    one_line_error(cli("train", "params/smoke.yaml", "--progress", "loud"), "invalid choice: 'loud'")
    one_line_error(cli("evaluate", "/no/such/run"), "no checkpoint, run folder or timm model named /no/such/run")


def test_train_then_evaluate_from_the_command_line(tmp_path, cli):
    out = cli("train", "params/smoke.yaml", "--out", str(tmp_path / "run"), "--limit-train", "128", "--limit-val", "64",
                  "--workers", "0", "--set", "batch_size=16")
    assert out.returncode == 0, out.stderr
    assert f"; run folder {tmp_path / 'run'}" in out.stdout and "epoch   1/1" in out.stdout
    assert out.stdout.count("run folder") == 1  # train's last line names it; the command does not again
    # the curves, as the train notebook leaves them: a PNG (Chromium) or an HTML page
    curves = [p for p in (tmp_path / "run" / "curves.png", tmp_path / "run" / "curves.html") if p.is_file()]
    assert len(curves) == 1 and f"curves: {curves[0]}" in out.stdout
    out = cli("evaluate", str(tmp_path / "run"), "--res", "24", "32", "--crop", "1.0", "--limit-val", "64")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[0].split()[:3] == ["test_res", "crop_pct", "resize_to"] and len(lines) == 3


def test_data_command(cli):
    out = cli("data", "default")
    assert out.returncode == 0 and "train_images: 12000" in out.stdout and "Ankle boot" in out.stdout
