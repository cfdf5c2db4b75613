"""The package's shape, checked on its source: three layers whose imports point down (core <- explore,
core <- workbook), no private name imported across modules, imports at module top unless the module is a
heavy or optional dependency that training does not need, and core's functions short enough to read."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
from clock import limit

PACKAGE = Path(__file__).resolve().parents[1] / "rsbkit"
# imported inside functions on purpose: heavy or optional, not needed to train a recipe
DEFERRED = {
    "pandas": "tables and views only (import costs about a second)",
    "papermill": "running notebooks (the notebooks extra)",
    "nbformat": "reading notebooks (the notebooks extra)",
    "nbconvert": "HTML copies of notebooks (the notebooks extra)",
    "submitit": "cluster sweeps (the cluster extra)",
    "psutil": "stopping a sweep's process tree (the cluster extra)",
    "kaleido": "static figures (needs chromium)",
    "plotly": "figures only: the command line and the GPU check run on machines without it",
    "rsbkit.workbook.figures": "plotly's figures, where a figure is drawn: the command line and bench run without plotly",
    "skimage": "sample photos for the explorers and the bench (optional)",
    "IPython": "display inside a notebook only",
    "tqdm": "progress='bar' only",
    "torch.utils.tensorboard": "tensorboard=True only (the tensorboard package)",
    "torchvision.datasets": "torchvision's Fashion-MNIST download path only",
}


def modules():
    return sorted(p for p in PACKAGE.rglob("*.py") if "_notebooks" not in p.parts)


def layer(path: Path) -> str:
    rel = path.relative_to(PACKAGE).parts
    return rel[0] if len(rel) > 1 else "top"


def imported(path: Path, node: ast.AST) -> str:
    """The absolute module name an import statement names."""
    if isinstance(node, ast.Import):
        return node.names[0].name
    if not node.level:
        return node.module or ""
    package = ["rsbkit", *path.relative_to(PACKAGE).parent.parts]
    base = package[: len(package) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def imports(path: Path):
    tree = ast.parse(path.read_text())
    inside = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
              for n in ast.walk(f) if isinstance(n, (ast.Import, ast.ImportFrom))}
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node, imported(path, node), id(node) in inside


def test_the_checks_see_real_imports():
    found = {name for _, name, _ in imports(PACKAGE / "core" / "train.py")}
    assert {"rsbkit.core.data", "rsbkit.core.recipes", "torch"} <= found
    assert imported(PACKAGE / "workbook" / "cli.py", ast.parse("from ..core.train import train").body[0]) == "rsbkit.core.train"


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down(path):
    forbidden = {"core": ("rsbkit.workbook", "rsbkit.explore"), "explore": ("rsbkit.workbook",)}.get(layer(path), ())
    bad = [name for _, name, _ in imports(path) if name.startswith(forbidden)]
    assert not bad, f"{path.relative_to(PACKAGE)} ({layer(path)}) imports {bad}"


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_private_name_crosses_modules(path):
    bad = [f"{name}.{a.name}" for node, name, _ in imports(path) if isinstance(node, ast.ImportFrom)
           and name.startswith("rsbkit") for a in node.names if a.name.startswith("_") and a.name != "__version__"]
    tree = ast.parse(path.read_text())
    aliases = {a.asname or a.name for node, name, _ in imports(path) if name.startswith("rsbkit") for a in node.names}
    bad += [f"{n.value.id}.{n.attr}" for n in ast.walk(tree) if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)
            and n.value.id in aliases and n.attr.startswith("_") and not n.attr.startswith("__")]
    assert not bad, f"{path.relative_to(PACKAGE)} uses private names of other modules: {bad}"


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_at_module_top_unless_deferred_for_a_reason(path):
    bad = [name for _, name, inside in imports(path) if inside
           and not any(name == d or name.startswith(d + ".") for d in DEFERRED)]
    assert not bad, f"{path.relative_to(PACKAGE)} imports {bad} inside functions; move them to the top (or say in DEFERRED why not)"


def test_core_functions_read_on_a_screen():
    long = [f"{p.relative_to(PACKAGE)}:{n.name} ({n.end_lineno - n.lineno + 1} lines)"
            for p in modules() if layer(p) == "core" for n in ast.walk(ast.parse(p.read_text()))
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > 80]
    assert not long, long


def test_public_names_work_from_the_top():
    import rsbkit

    for name in rsbkit.__all__:
        assert getattr(rsbkit, name) is not None, name
    assert rsbkit.train.__module__ == "rsbkit.core.train" and rsbkit.A3.name == "a3"


@pytest.mark.parametrize("env, frozen", [(None, False), ("1", True)])
def test_only_rsbkits_own_processes_skip_the_final_garbage_collection(env, frozen):
    """Importing rsbkit's layers registers no exit handler in a user's process; with RSBKIT_FAST_EXIT=1 (what the CLI
    sets for the processes it starts, and the suite for its own) rsbkit.workbook registers gc.freeze, and a handler
    registered before it runs after it and finds every object frozen. The layers' __init__ files alone: no torch."""
    import os
    import subprocess
    import sys

    load = "".join(f"spec = importlib.util.spec_from_file_location('{name}', {str(PACKAGE / name / '__init__.py')!r}); "
                   "spec.loader.exec_module(importlib.util.module_from_spec(spec)); " for name in ("core", "workbook", "explore"))
    code = ("import atexit, gc, importlib.util, sys; atexit.register(lambda: print('frozen', gc.get_freeze_count() > 1000)); "
            + load + "[dict(a=i) for i in range(5000)]")
    environ = {k: v for k, v in os.environ.items() if k != "RSBKIT_FAST_EXIT"}
    if env is not None:
        environ["RSBKIT_FAST_EXIT"] = env
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=limit(60), env=environ)
    assert out.returncode == 0 and out.stdout.strip() == f"frozen {frozen}", out
