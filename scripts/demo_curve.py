"""Gather the demo's reference curve (params/sweeps/demo_curve.yaml's runs) into one CSV on stdout: one row per
seed and epoch, with the code version and the processor that ran it.

    python scripts/demo_curve.py runs/sweeps/demo_curve > tests/workbook/demo_curve.csv
"""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

COLUMNS = ["seed", "epoch", "train_loss", "val_top1", "val_loss", "code_version", "device_name"]


def main(folder: str) -> None:
    writer = csv.DictWriter(sys.stdout, COLUMNS, lineterminator="\n")
    writer.writeheader()
    for run in sorted(Path(folder).glob("seed=*"), key=lambda p: int(p.name.split("=")[1])):
        result = json.loads((run / "result.json").read_text())
        with open(run / "metrics.csv") as f:
            for row in csv.DictReader(f):
                writer.writerow(dict(seed=result["seed"], epoch=row["epoch"], train_loss=row["train_loss"],
                                     val_top1=row["val_top1"], val_loss=row["val_loss"],
                                     code_version=result.get("code_version"), device_name=result.get("device_name")))


if __name__ == "__main__":
    main(*sys.argv[1:])
