"""findings/: the demo-scale studies' evidence is in the repository and agrees with itself: every file the
README names exists, its statistics are those of the run tables beside it, and the tour's links land."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent
FINDINGS = ROOT / "findings"


def _anchor(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    return re.sub(r"[^a-z0-9 -]", "", heading.strip().lower()).replace(" ", "-")


def test_every_file_the_findings_name_is_there_and_small():
    text = (FINDINGS / "README.md").read_text()
    named = set(re.findall(r"\]\(([^)#]+\.(?:csv|png|json))\)", text))
    assert named, "the findings link their CSVs and figures"
    for name in named:
        assert (FINDINGS / name).is_file(), name
    assert sum(p.stat().st_size for p in FINDINGS.iterdir()) < 5 * 2**20  # a few MB at most: no checkpoints


def test_seed_statistics_are_those_of_the_seed_runs():
    runs = pd.read_csv(FINDINGS / "seeds_runs.csv")
    stats = json.loads((FINDINGS / "seed_stats.json").read_text())
    done = runs[runs["status"] == "completed"]["final_top1"]
    assert stats["n"] == len(done) == 5
    assert stats["mean"] == pytest.approx(done.mean()) and stats["std"] == pytest.approx(done.std(ddof=1))
    comparison = pd.read_csv(FINDINGS / "comparison_final_top1.csv")
    for study in comparison["study"]:
        table = pd.read_csv(FINDINGS / f"{study}_runs.csv")
        row = comparison[comparison["study"] == study].iloc[0]
        assert row["mean"] == pytest.approx(table[table["status"] == "completed"]["final_top1"].mean()), study
        assert row["n"] == (table["status"] == "completed").sum()


def test_the_tour_and_the_readme_link_the_findings():
    headings = {_anchor(h) for h in re.findall(r"^#+ (.+)$", (FINDINGS / "README.md").read_text(), re.M)}
    tour = json.loads((ROOT / "notebooks" / "tour.ipynb").read_text())
    links = re.findall(r"\.\./findings/README\.md#([a-z0-9-]+)", "".join("".join(c["source"]) for c in tour["cells"]))
    assert len(links) >= 4 and set(links) <= headings, set(links) - headings
    assert "findings/README.md" in "\n".join((ROOT / "README.md").read_text().splitlines()[:40])
