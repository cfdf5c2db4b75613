"""Recipes as YAML files (``base:`` plus overrides; a run folder's recipe.yaml), command-line
overrides, and the pandas views that show how recipes differ (:func:`changes`, :func:`compare`;
pandas is imported when they are called)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Union

import yaml

from ..errors import RecipeError
from ..paths import find_path
from .catalogue import RECIPES, get_recipe
from .schema import EXECUTION_FIELDS, Recipe, did_you_mean, recipe_fields


def load_recipe(source: Union[str, Path], **overrides: Any) -> Recipe:
    """A recipe from a name (``a3``) or a YAML file (``base:`` plus overrides)."""
    path = find_path(source)
    if path.suffix in (".yaml", ".yml") or path.exists():
        recipe = recipe_from_yaml(path)
    else:
        recipe = get_recipe(str(source))
    return recipe.replace(**overrides) if overrides else recipe


def recipe_from_yaml(path: Union[str, Path]) -> Recipe:
    """Read ``base: NAME`` plus field overrides; an unknown key fails with its line.

    A run folder's ``recipe.yaml`` also loads: its ``execution:`` block holds
    fields too (how the run executed, EXECUTION_FIELDS), its ``resolved:`` block is
    informational and ignored.
    """
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe file {path} does not exist; give a YAML path or a recipe name ({', '.join(RECIPES)})")
    text = path.read_text()
    try:
        node = yaml.compose(text)
    except yaml.YAMLError as exc:
        raise RecipeError(f"{path}: not valid YAML: {exc}") from None
    if node is None:
        raise RecipeError(f"{path} is empty; it needs at least 'base: a3' (or another recipe name)")
    if not isinstance(node, yaml.MappingNode):
        raise RecipeError(f"{path}: expected 'key: value' lines, got a {node.tag.rsplit(':', 1)[-1]}")
    lines = {k.value: k.start_mark.line + 1 for k, _ in node.value}
    values = yaml.safe_load(text)
    base = values.pop("base", None)
    values.pop("resolved", None)
    execution = values.pop("execution", None) or {}
    if not isinstance(execution, dict):
        raise RecipeError(f"{path}, line {lines['execution']}: execution: holds 'field: value' lines "
                          f"({', '.join(sorted(EXECUTION_FIELDS))})")
    for key in execution:
        if key not in EXECUTION_FIELDS:
            raise RecipeError(f"{path}, line {lines['execution']}: {key!r} is not a way of running "
                              f"({', '.join(sorted(EXECUTION_FIELDS))}); put training fields at the top level")
        if key in values:
            raise RecipeError(f"{path}: {key} is given twice, at the top level and under execution:; keep one")
    values.update(execution)
    for key in values:
        if key not in recipe_fields():
            raise RecipeError(f"{path}, line {lines[key]}: " + did_you_mean("recipe field", key, recipe_fields()))
    recipe = get_recipe(str(base)) if base is not None else Recipe()
    values.setdefault("name", path.stem)
    try:
        return recipe.replace(**values)
    except RecipeError as exc:
        bad = next((k for k in values if str(exc).startswith(f"{k}=")), None)
        where = f"{path}, line {lines[bad]}" if bad else str(path)
        raise RecipeError(f"{where}: {exc}") from None


def base_recipe(source: Union[str, Path, Recipe]) -> Recipe:
    """The named recipe `source` builds on: the ``base:`` of a YAML file, the recipe itself for a
    name (``a3``), the named recipe of that name for a Recipe object, and rsbkit's field defaults
    (``Recipe()``) when there is none (a YAML file without ``base:``, a run folder's recipe.yaml)."""
    if isinstance(source, Recipe):
        return RECIPES.get(source.name.lower().replace("-", "_"), Recipe())
    path = Path(source)
    if path.suffix in (".yaml", ".yml") or path.exists():
        recipe_from_yaml(path)  # the file's own errors first, with their line numbers
        base = (yaml.safe_load(path.read_text()) or {}).get("base")
        return get_recipe(str(base)) if base is not None else Recipe()
    return get_recipe(str(source))


def changes(recipe: Recipe, base: Recipe):
    """What `recipe` changes from `base`: one row per field that differs (name aside), with the base's
    value and this recipe's, in the recipe's field order. ``attrs['base']`` names the base."""
    import pandas as pd

    mine, theirs = recipe.to_dict(), base.to_dict()
    rows = [(k, _show(theirs[k]), _show(v)) for k, v in mine.items() if k != "name" and v != theirs[k]]
    table = pd.DataFrame(rows, columns=["field", f"{base.name} (base)", f"{recipe.name} (this run)"]).set_index("field")
    table.attrs["base"] = base.name
    return table


def _show(value: Any) -> str:
    """A field value as it reads in YAML: lists in brackets, None as null."""
    return "null" if value is None else yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["lr=1e-3", "aa=none"]`` -> ``{"lr": "1e-3", "aa": None}``, values read as YAML scalars."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise RecipeError(f"override {pair!r} is not key=value, e.g. --set lr=1e-3")
        out[key.strip()] = yaml.safe_load(value) if value.strip() else None
    return out


def compare(*recipes: Recipe, all_fields: bool = False):
    """The fields where `recipes` differ (or every field), one column per recipe: a pandas DataFrame."""
    import pandas as pd

    table = pd.DataFrame({r.name: {k: v for k, v in r.to_dict().items() if k != "name"} for r in recipes})
    if all_fields:
        return table
    differs = table.astype(str).nunique(axis=1) > 1
    return table[differs]
