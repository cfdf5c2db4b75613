"""findings/: the demo-scale studies' evidence is in the repository and agrees with itself. Every file the
README names exists, every statistic is that of the run tables beside it, the README's rows are those of
the CSVs, and the tour's links land."""
from __future__ import annotations

import json
import math
import re
import sys

import pandas as pd
import pytest
from conftest import ROOT

from rsbkit.workbook.studies import Z95, group_stats

FINDINGS = ROOT / "findings"
sys.path.insert(0, str(ROOT / "scripts"))
from findings import comparison_row  # noqa: E402  (the script that wrote the rows)


def readme() -> str:
    return (FINDINGS / "README.md").read_text()


def _anchor(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    return re.sub(r"[^a-z0-9 -]", "", heading.strip().lower()).replace(" ", "-")


def test_every_file_the_findings_name_is_there_and_the_folder_is_small():
    named = set(re.findall(r"\]\(([^)#]+\.(?:csv|png|json))\)", readme()))
    assert {"seeds_runs.csv", "seeds.png", "comparison.csv", "comparison.png", "resolution.csv", "resolution.png"} <= named
    for name in named:
        assert (FINDINGS / name).is_file(), name
    assert sum(p.stat().st_size for p in FINDINGS.iterdir()) < 5 * 2**20  # a few MB at most: no checkpoints


def test_seed_statistics_are_those_of_the_seed_runs():
    runs = pd.read_csv(FINDINGS / "seeds_runs.csv")
    stats = json.loads((FINDINGS / "seed_stats.json").read_text())
    done = runs[runs["status"] == "completed"]
    assert stats["n"] == len(done) == 5 and (stats["recipe"], stats["data"]) == ("demo", "default")
    assert stats["mean"] == pytest.approx(done["final_top1"].mean())
    assert stats["std"] == pytest.approx(done["final_top1"].std(ddof=1))
    assert sorted(stats["values"]) == sorted(done["final_top1"])
    for row in done.itertuples():  # the README's seed table
        assert f"| {row.name} | {row.final_top1:.2f} | {row.best_top1:.2f} | {row.best_epoch} |" in readme(), row.name


def test_the_comparison_is_computed_from_its_runs_and_the_readme_quotes_it():
    table = pd.read_csv(FINDINGS / "comparison.csv")
    runs = pd.read_csv(FINDINGS / "comparison_runs.csv")
    stats = json.loads((FINDINGS / "seed_stats.json").read_text())
    recomputed = group_stats(runs, ["variant"], "final_top1").set_index("variant")
    for row in table.itertuples():
        again = recomputed.loc[row.variant]
        assert (row.mean, row.std, row.n) == (pytest.approx(again["mean"]), pytest.approx(again["std"]), again["n"])
        assert row.noise_band == pytest.approx(Z95 * stats["std"] * math.sqrt(1 / row.n + 1 / stats["n"]))
        own = Z95 * math.sqrt(stats["std"] ** 2 / stats["n"] + row.std ** 2 / row.n)
        assert row.band == pytest.approx(max(row.noise_band, own))
        assert row.diff == pytest.approx(row.mean - stats["mean"]) and row.beyond_noise == (abs(row.diff) > row.band)
        quoted = [line for line in readme().splitlines() if line.startswith(f"| {row.variant} |")]
        assert quoted and set(quoted) == {comparison_row(row)}, row.variant
    # every run is one of the committed sweeps' runs, with the same top-1
    sweeps = pd.concat([pd.read_csv(FINDINGS / f"{name}_runs.csv").assign(sweep=name)
                        for name in ("seeds", "loss_ce", "procedure_torchvision", "repeats", "lr")])
    by_run = {f"runs/sweeps/{r.sweep}/{r.name}": r.final_top1 for r in sweeps.itertuples()}
    assert {r.run: r.final_top1 for r in runs.itertuples()} == by_run


def test_the_resolution_table_is_the_mean_of_the_seed_runs():
    rows = pd.read_csv(FINDINGS / "resolution_runs.csv")
    table = pd.read_csv(FINDINGS / "resolution.csv")
    assert rows["run"].nunique() == 5
    again = group_stats(rows, ["test_res", "crop_pct"], "top1")
    assert list(table["mean"]) == pytest.approx(list(again["mean"])) and list(table["n"]) == [5] * len(table)
    for res, part in table.groupby("test_res"):  # the README's pivot: one row per test resolution
        line = f"| {res} | " + " | ".join(f"{v:.2f}" for v in part.sort_values("crop_pct")["mean"]) + " |"
        assert line in readme(), line


def test_the_tour_and_the_readme_link_the_findings():
    headings = {_anchor(h) for h in re.findall(r"^#+ (.+)$", readme(), re.M)}
    tour = json.loads((ROOT / "notebooks" / "tour.ipynb").read_text())
    links = re.findall(r"\.\./findings/README\.md#([a-z0-9-]+)", "".join("".join(c["source"]) for c in tour["cells"]))
    assert len(set(links)) >= 6 and set(links) <= headings, set(links) - headings
    assert "findings/README.md" in "\n".join((ROOT / "README.md").read_text().splitlines()[:10])
