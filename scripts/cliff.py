"""The 34-px cliff of findings/README.md section 4, tested: the same checkpoints evaluated through
rsbkit's evaluation (timm's eval transform) and through a path that shares no code with it (torch's
antialiased interpolate on the whole batch; with --pil also PIL's resize without timm), at every test
size from 28 to 44 px, beside the feature-map sizes the network produces at each.

    .venv/bin/python scripts/cliff.py runs/sweeps/seeds/seed=* runs/sweeps/geometry/* [--out findings]

Writes cliff_runs.csv (one row per run, path and test size: top-1 and the map sizes) and cliff.csv (the
mean over the runs of each train size). Crop ratio 1.0 (the whole image resized: no crop to disagree on).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image

from rsbkit.core.data import load_data
from rsbkit.core.evaluate import evaluate, load_model
from rsbkit.explore.resolution import resnet_maps

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
def pil_images(images: np.ndarray, res: int) -> torch.Tensor:
    """PIL's bicubic resize of each whole grey image to res x res, as RGB floats in [0, 1]."""
    out = np.stack([np.asarray(Image.fromarray(img).convert("RGB").resize((res, res), Image.BICUBIC)) for img in images])
    return torch.from_numpy(out).permute(0, 3, 1, 2).float() / 255


def torch_images(images: np.ndarray, res: int) -> torch.Tensor:
    """torch's antialiased bicubic interpolation of the whole batch to res x res, clamped to [0, 1]."""
    x = torch.from_numpy(np.array(images)).float().div(255).unsqueeze(1).expand(-1, 3, -1, -1)
    return F.interpolate(x, size=(res, res), mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)


def top1(model: torch.nn.Module, images: torch.Tensor, labels: np.ndarray, batch: int = 500) -> float:
    correct = 0
    with torch.no_grad():
        for i in range(0, len(images), batch):
            x = (images[i : i + batch] - MEAN) / STD
            correct += int((model(x).argmax(1).numpy() == labels[i : i + batch]).sum())
    return 100.0 * correct / len(images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run folders (their best.pt)")
    parser.add_argument("--sizes", default="28-44", help="test sizes, FIRST-LAST (every px)")
    parser.add_argument("--pil", action="store_true", help="a third path: PIL's resize without timm (as timm's own)")
    parser.add_argument("--out", default="findings")
    args = parser.parse_args()
    first, last = map(int, args.sizes.split("-"))
    data = load_data("default")
    images, labels = data.val.images, data.val.labels
    rows = []
    for run in map(Path, args.runs):
        model, recipe = load_model(run)
        model.eval()
        for res in range(first, last + 1):
            maps = resnet_maps(res)  # the network's own: tests/explore/test_explore.py checks them on timm's ResNet-18
            paths = {"rsbkit": evaluate(model, data, test_res=res, crop_pct=1.0, workers=0, device="cpu")["top1"],
                     "torch": top1(model, torch_images(images, res), labels)}
            if args.pil:
                paths["pil"] = top1(model, pil_images(images, res), labels)
            for path, value in paths.items():
                rows.append(dict(run=f"{run.parent.name}/{run.name}", train_res=recipe.train_res, path=path, test_res=res,
                                 top1=round(value, 2), maxpool=maps["max-pool"], last_map=maps["stage 4"],
                                 maps="-".join(map(str, maps.values()))))
            print(f"{run.name} {res} px: " + ", ".join(f"{k} {v:.2f}" for k, v in paths.items()) + f"  maps {rows[-1]['maps']}",
                  flush=True)
    table = pd.DataFrame(rows)
    out = Path(args.out)
    table.to_csv(out / "cliff_runs.csv", index=False)
    summary = (table.groupby(["train_res", "path", "test_res", "maxpool", "last_map", "maps"], as_index=False)["top1"]
               .agg(mean="mean", std="std", n="count"))
    summary["mean"], summary["std"] = summary["mean"].round(2), summary["std"].round(2)
    summary.to_csv(out / "cliff.csv", index=False)
    print(f"wrote {out / 'cliff_runs.csv'} and {out / 'cliff.csv'} ({len(table)} rows)")


if __name__ == "__main__":
    main()
