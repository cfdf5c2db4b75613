"""The docs point at things that exist: every dotted ``rsbkit.`` path in the code, tests and docs imports, and every
relative link of the README and the pages under docs/, benchmarks/ and findings/ reaches a file or folder of the
repository (nothing cites what a clone lacks)."""
from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOTTED = re.compile(r"(?<![\w/.])rsbkit(?:\.[A-Za-z_][A-Za-z0-9_]*)+")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
PAGES = [ROOT / "README.md", *sorted(ROOT.glob("docs/*.md")), *sorted(ROOT.glob("benchmarks/*.md")),
         *sorted(ROOT.glob("findings/*.md"))]

pytestmark = pytest.mark.cost(12)


def resolves(path: str) -> bool:
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for name in parts[i:]:
            if not hasattr(obj, name):
                return False
            obj = getattr(obj, name)
        return True
    return False


def test_every_dotted_rsbkit_path_imports():
    files = [*ROOT.glob("rsbkit/**/*.py"), *ROOT.glob("tests/**/*.py"), *ROOT.glob("scripts/*.py"),
             *ROOT.glob("notebooks/**/*.ipynb"), *PAGES]
    bad = {}
    for f in files:
        if "__pycache__" in f.parts or "_notebooks" in f.parts:
            continue
        for found in DOTTED.finditer(f.read_text(errors="ignore")):
            name = found.group(0)
            if name.endswith((".py", ".yaml", ".md", ".json", ".ipynb", ".csv", ".png")) or resolves(name):
                continue
            bad.setdefault(name, set()).add(str(f.relative_to(ROOT)))
    assert not bad, bad


def test_relative_links_reach_files_of_the_repository():
    broken = []
    for page in PAGES:
        for target in LINK.findall(page.read_text()):
            if re.match(r"^[a-z]+:|^#", target):
                continue
            path = (page.parent / target.split("#")[0]).resolve()
            if not path.exists() or ROOT not in path.parents:
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert not broken, broken


def test_no_citation_points_outside_the_repository():
    outside = re.compile(r"\.\./shared|shared/REFERENCE|REFERENCE\.md|shared/seeds")
    files = [*ROOT.glob("rsbkit/**/*.py"), *ROOT.glob("tests/**/*.py"), *ROOT.glob("scripts/*"), *PAGES,
             *ROOT.glob("params/**/*.yaml"), *ROOT.glob("notebooks/**/*.ipynb")]
    hits = [str(f.relative_to(ROOT)) for f in files if f.is_file() and "__pycache__" not in f.parts
            and f.name != "test_docs.py" and outside.search(f.read_text(errors="ignore"))]
    assert not hits, hits
