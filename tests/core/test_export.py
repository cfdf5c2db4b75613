"""A run exported for timm users (issue 21, item 5): timm loads the folder itself and gives the run's logits
and its own evaluation settings."""
from __future__ import annotations

import json

import timm
import torch
from timm.data import IMAGENET_DEFAULT_MEAN, resolve_data_config

from rsbkit.core.evaluate import load_model
from rsbkit.core.export import export_for_timm


def test_timm_loads_the_exported_run_with_its_logits_and_evaluation(smoke_run, tmp_path):
    out = export_for_timm(smoke_run, tmp_path / "export")
    ours, recipe = load_model(smoke_run)
    theirs = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    x = torch.randn(4, 3, recipe.test_res, recipe.test_res, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(theirs(x), ours(x), atol=1e-6)
    cfg = resolve_data_config(model=theirs)
    assert (cfg["input_size"], cfg["crop_pct"], cfg["interpolation"]) == ((3, recipe.test_res, recipe.test_res),
                                                                          recipe.crop_pct, recipe.interpolation)
    assert tuple(cfg["mean"]) == IMAGENET_DEFAULT_MEAN  # what rsbkit trained with, whatever the architecture's default
    config = json.loads((out / "config.json").read_text())
    assert config["architecture"] == recipe.model and config["num_classes"] == 10
    assert config["label_names"][9] == "Ankle boot" and config["rsbkit_recipe"] == recipe.name
    # the other way timm users load a file: the weights with the run's pretrained config as an overlay
    overlay = timm.create_model(recipe.model, pretrained=True, num_classes=10,
                                pretrained_cfg_overlay=dict(file=str(out / "model.safetensors"), num_classes=10)).eval()
    with torch.no_grad():
        assert torch.allclose(overlay(x), ours(x), atol=1e-6)


def test_the_cli_exports(cli, smoke_run, tmp_path):
    out = cli("export", str(smoke_run), str(tmp_path / "e"))
    assert out.returncode == 0, out.stderr
    assert "local-dir:" in out.stdout and (tmp_path / "e" / "model.safetensors").is_file()
