"""An explorer's widget state as a change to the recipe it started at: YAML lines for a recipe file, ``--set`` flags
for ``rsbkit train``, and ``recipe.replace(...)`` in Python, validated by the recipe schema as it is made.

:func:`recipe_change` takes the recipe and the state of one notebook's explorers, ``{explorer: {control: value}}``
(``Explorer.values()``), and returns a :class:`Change`. Each explorer's controls map to recipe fields here
(``MAPPERS``); a control that maps to several fields (the mixing choice: the mixup and CutMix alphas and the switch
probability; progressive resizing: its start, ramp and step) brings all of them into the change when it differs
from the recipe. Controls that only choose what the figure shows (an image, a draw seed, a logit) are named as
such. A state the recipe cannot express (a fractional RandAugment magnitude, an op alone, a value out of range, a
batch that does not split) gives ``Change.error``, with the schema's reason, and no lines.
"""
from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import yaml

from ..core.errors import RecipeError, RsbkitError
from ..core.paths import checkout_path, find_path
from ..core.recipes import RECIPES, Recipe, load_recipe, plan_batch
from . import augment, schedule

DEMO = "params/demo.yaml"  # the recipe an explorer starts at unless its notebook names another


def start_recipe(source: Union[str, Recipe] = DEMO) -> Recipe:
    """The recipe an explorer starts at: a Recipe, a catalogue name (``a3``) or a YAML file. A relative file is read
    from the kernel's folder, else from the checkout rsbkit runs from (a JupyterLab opened elsewhere)."""
    if isinstance(source, Recipe):
        return source
    path = find_path(source)
    if not path.exists() and not Path(source).is_absolute():
        inside = checkout_path(str(source))
        if inside is not None and inside.exists():
            path = inside
    return load_recipe(path if path.exists() else source)


@dataclass(frozen=True)
class Part:
    """What one control (or a pair of controls read together) sets: its fields, and how close a slider value must be
    to the recipe's to count as the same (just under half the slider's step: 1.33 on a 0.01 slider is the recipe's 4/3)."""

    control: str
    fields: dict[str, Any]
    tol: float = 0.0


@dataclass(frozen=True)
class Change:
    """The change from `base` that a widget state makes. `fields` holds every field it sets (only controls that
    differ from the recipe; all the fields of such a control); `error` says why the state is not a recipe, and
    then the three forms are empty. `source` names the base as a command line takes it (a YAML file or a name)."""

    base: Recipe
    source: str
    fields: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    views: tuple[str, ...] = ()  # controls that choose what the figure shows, not a recipe field

    @property
    def recipe(self) -> Optional[Recipe]:
        return None if self.error else self.base.replace(**self.fields)

    @property
    def yaml(self) -> str:
        """The lines to put in the recipe file (replacing a line of the same field)."""
        if self.error or not self.fields:
            return ""
        return "".join(f"{k}: {_flow(v)}\n" for k, v in self.fields.items())

    @property
    def set_flags(self) -> str:
        """``--set`` flags, as ``rsbkit train`` reads them (each value a YAML scalar or flow list)."""
        if self.error:
            return ""
        return " ".join(f"--set {shlex.quote(f'{k}={_flow(v)}')}" for k, v in self.fields.items())

    @property
    def command(self) -> str:
        return "" if self.error else f"rsbkit train {shlex.quote(self.source)} {self.set_flags}".rstrip()

    @property
    def python(self) -> str:
        if self.error:
            return ""
        return "recipe.replace(" + ", ".join(f"{k}={v!r}" for k, v in self.fields.items()) + ")"

    def recipe_file(self) -> str:
        """A whole recipe file: the base's YAML file with these lines in place of its own for the same fields (a
        catalogue recipe: ``base: NAME`` and the lines)."""
        if self.error:
            raise RecipeError(self.error)
        path = start_path(self.source)
        if path is None:
            return f"base: {self.source}\n" + self.yaml
        keep, skipping = [], False
        for line in path.read_text().splitlines():
            key = re.match(r"([A-Za-z_][A-Za-z0-9_]*)\s*:", line)
            if key:
                skipping = key.group(1) in self.fields
            elif line and not line[0].isspace() and not line.startswith("-"):
                skipping = False
            if not skipping:
                keep.append(line)
        return "\n".join(keep).rstrip() + "\n" + self.yaml

    @property
    def text(self) -> str:
        """The panel's text: the three forms, or the reason the state is not a recipe."""
        head = f"from {self.base.name} ({self.source})" if self.source != self.base.name else f"from {self.source}"
        if self.error:
            lines = [f"Not a recipe {head}: {self.error}"]
        elif not self.fields:
            lines = [f"No change {head}: these settings are the recipe's."]
        else:
            lines = [f"The change {head}:", "", "# YAML, in the recipe file (in place of the same fields' lines)",
                     self.yaml.rstrip(), "", "# command line", self.command, "", "# Python", self.python]
        if self.views:
            lines += ["", f"(not recipe fields, only what the figure shows: {', '.join(self.views)})"]
        return "\n".join(lines)


def start_path(source: str) -> Optional[Path]:
    """The YAML file `source` names, or None for a catalogue name."""
    if str(source).lower().replace("-", "_") in RECIPES and not Path(source).exists():
        return None
    path = find_path(source)
    if not path.exists():
        inside = checkout_path(str(source))
        path = inside if inside is not None and inside.exists() else path
    return path if path.exists() else None


def _flow(value: Any) -> str:
    value = list(value) if isinstance(value, tuple) else value
    return "null" if value is None else yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def _num(value: float) -> float:
    """A slider's float as it reads (0.30000000000000004 is 0.3)."""
    return round(float(value), 6)


# ---------------------------------------------------------------- RandAugment strings, as timm reads them


def _sections(aa: Optional[str]) -> list[list[str]]:
    """A rand- string's sections as [key, value] pairs, split as timm's rand_augment_transform splits them."""
    if not aa or not aa.startswith("rand"):
        return []
    out = []
    for c in aa.split("-")[1:]:
        if c.startswith("t"):
            out.append(["t", c[1:]])
        else:
            cs = re.split(r"(\d.*)", c)
            if len(cs) >= 2:
                out.append([cs[0], cs[1]])
    return out


ORDER = ("m", "n", "mstd", "mmax", "p", "inc", "t")


def rand_string(base_aa: Optional[str], *, m: Optional[float] = None, n: Optional[int] = None,
                mstd: Optional[float] = None, inc: Optional[bool] = None) -> str:
    """`base_aa` with the given parts set, its other sections (mmax, p, t) kept in place; a non-RandAugment base
    starts from ``rand``. timm reads m and n as integers: a fractional m is refused, with the reason."""
    if m is not None and float(m) != int(m):
        raise RecipeError(f"magnitude {m:g}: an aa string's m is a whole number (timm reads it with int()), so m{int(m)} "
                          f"or m{int(m) + 1}; mstd adds noise around it in training")
    parts = _sections(base_aa)
    keys = [k for k, _ in parts]
    wanted = {"m": None if m is None else str(int(m)),
              "n": None if n is None or (n == 2 and "n" not in keys) else str(int(n)),
              "mstd": None if mstd is None or (not mstd and "mstd" not in keys) else f"{float(mstd):g}",
              "inc": None if inc is None or (not inc and "inc" not in keys) else str(int(bool(inc)))}
    for key, value in wanted.items():
        if value is None:
            continue
        if key in keys:
            parts[keys.index(key)][1] = value
        else:  # in timm's documented order: m, n, mstd, mmax, p, inc, t
            later = [i for i, (k, _) in enumerate(parts) if k in ORDER and ORDER.index(k) > ORDER.index(key)]
            parts.insert(later[0] if later else len(parts), [key, value])
        keys = [k for k, _ in parts]
    return "-".join(["rand"] + [k + v for k, v in parts])


def _same_aa(a: Optional[str], b: Optional[str]) -> bool:
    if a == b:
        return True
    if not (a and b and a.startswith("rand") and b.startswith("rand")):
        return False
    try:
        return augment.parse_randaugment(a) == augment.parse_randaugment(b)
    except RecipeError:
        return False


# ---------------------------------------------------------------- each explorer's controls -> recipe fields


def _randaugment(base: Recipe, s: dict) -> list[Part]:
    return [Part("RandAugment", {"aa": rand_string(base.aa, m=s["m"], n=s["n"], mstd=_num(s["mstd"]), inc=s["inc"])})]


INCREASING = augment.parse_randaugment("rand-inc1").ops
PLAIN = augment.parse_randaugment("rand-inc0").ops


def _op(base: Recipe, s: dict) -> list[Part]:
    """One op at a fixed magnitude: in a recipe, the magnitude m of every op RandAugment draws (it draws n of the
    op list per image; no aa string applies one op alone), and the op list (inc0 or inc1) that holds the op."""
    op = s["op"]
    if op not in INCREASING and op not in PLAIN:
        raise RecipeError(f"op {op!r} is in no op list a rand- string samples from (inc0: {', '.join(PLAIN)}; "
                          f"inc1: {', '.join(INCREASING)})")
    inc = None if op in INCREASING and op in PLAIN else op in INCREASING
    return [Part("op and magnitude", {"aa": rand_string(base.aa, m=float(s["magnitude"]), inc=inc)})]


def _rrc(base: Recipe, s: dict) -> list[Part]:
    return [Part("train resolution", {"train_res": int(s["size"])}),
            Part("scale", {"scale": tuple(_num(v) for v in s["scale"])}, 0.0099),
            Part("ratio", {"ratio": tuple(_num(v) for v in s["ratio"])}, 0.0049),
            Part("flip probability", {"hflip": _num(s["hflip"])}, 0.049)]


MIXING = ("mixup and CutMix", "mixup only", "CutMix only", "neither")
ALPHAS = (0.1, 1.0)  # RSB A2/A3's mixup and CutMix alphas, for a recipe that has them off


def mixing_of(recipe: Recipe) -> str:
    """The MIXING choice a recipe makes."""
    return mixing_choice(recipe.mixup, recipe.cutmix)


def mixing_choice(mixup: float, cutmix: float) -> str:
    """The MIXING choice of a mixup and a CutMix alpha (0: off)."""
    return MIXING[[(True, True), (True, False), (False, True), (False, False)].index((mixup > 0, cutmix > 0))]


def _mix(base: Recipe, s: dict) -> list[Part]:
    parts = [Part("label smoothing", {"smoothing": _num(s["smoothing"])}, 0.0249)]
    if "mixing" in s:
        mixup, cutmix = base.mixup or ALPHAS[0], base.cutmix or ALPHAS[1]
        if "mixup_alpha" in s:  # the explorer's alpha sliders: the alphas of the mixings that are on
            mixup, cutmix = _snap(_num(s["mixup_alpha"]), mixup, 0.0249), _snap(_num(s["cutmix_alpha"]), cutmix, 0.0249)
        mixing = s["mixing"]
        if mixing not in MIXING:
            raise RecipeError(f"mixing {mixing!r}: one of {', '.join(MIXING)}")
        fields = {"mixup": mixup if mixing in MIXING[:2] else 0.0, "cutmix": cutmix if mixing in (MIXING[0], MIXING[2]) else 0.0}
        if mixing == MIXING[0]:
            fields.update(mixup_switch_prob=base.mixup_switch_prob, mixup_prob=base.mixup_prob)
        parts.append(Part("in training", fields))
    return parts


def _loss(base: Recipe, s: dict) -> list[Part]:
    if s["threshold_on"]:
        thresh = {"bce_target_thresh": _num(s["threshold"])}
        if base.loss != "bce":  # the threshold is BCE's: with CE it would do nothing
            thresh = {"loss": "bce", **thresh}
    else:
        thresh = {"bce_target_thresh": None}
    return [Part("label smoothing", {"smoothing": _num(s["smoothing"])}, 0.0249), Part("BCE target threshold", thresh, 0.0249)]


def _resolution(base: Recipe, s: dict) -> list[Part]:
    return [Part("train resolution", {"train_res": int(s["train_res"])}),
            Part("test resolution", {"test_res": int(s["test_res"])}),
            Part("crop ratio", {"crop_pct": _num(s["crop_pct"])}, 0.0124),
            Part("RRC scale min", {"scale": (_num(s["scale_min"]), 1.0)}, 0.0099)]


def _schedule(base: Recipe, s: dict) -> list[Part]:
    parts = [Part("batch size", {"batch_size": int(s["batch_size"])}), Part("accumulate", {"grad_accum": bool(s["grad_accum"])})]
    if s.get("progressive"):
        start = int(s["res_start"])
        if start >= base.train_res:
            raise RecipeError(f"progressive resizing grows to train_res ({base.train_res} px): a start size of {start} px "
                              f"is not below it; choose a start under {base.train_res} px")
        grown = schedule.progressive(base, start)
        parts.append(Part("progressive resizing", {k: getattr(grown, k) for k in ("train_res_start", "train_res_ramp", "train_res_step")}))
    else:
        parts.append(Part("progressive resizing", {"train_res_start": None}))
    return parts


# explorer -> (its controls -> parts, the controls that only choose what is drawn)
MAPPERS: dict[str, tuple[Callable[[Recipe, dict], list[Part]], tuple[str, ...]]] = {
    "randaugment": (_randaugment, ("image", "draw seed")),
    "op": (_op, ("image",)),
    "rrc": (_rrc, ("image", "crop seed")),
    "mix": (_mix, ("images a and b", "lambda", "mode", "box seed")),
    "loss": (_loss, ("lambda", "logit", "class")),
    "resolution": (_resolution, ("photo", "crop seed")),
    "schedule": (_schedule, ()),
}


def _differs(new: Any, old: Any, tol: float, name: str) -> bool:
    if name == "aa":
        return not _same_aa(new, old)
    if new is None or old is None or isinstance(new, (str, bool)) or isinstance(old, (str, bool)):
        return new != old
    if isinstance(new, tuple):
        return len(new) != len(old) or any(_differs(a, b, tol, name) for a, b in zip(new, old))
    return abs(float(new) - float(old)) > tol + 1e-9


def _snap(new: Any, old: Any, tol: float) -> Any:
    """The recipe's own value where a slider shows it rounded (ratio 1.33 for 4/3), element by element."""
    if isinstance(new, tuple) and isinstance(old, tuple) and len(new) == len(old):
        return tuple(_snap(a, b, tol) for a, b in zip(new, old))
    if tol and isinstance(new, float) and isinstance(old, (int, float)) and not isinstance(old, bool):
        return old if abs(new - old) <= tol + 1e-9 else new
    return new


def recipe_change(base: Union[Recipe, str], state: dict[str, dict[str, Any]], source: Optional[str] = None) -> Change:
    """The change from `base` that the explorers' `state` makes (``{"rrc": rrc.values(), ...}``, keys of MAPPERS),
    validated: ``base.replace(**fields)`` and its batch plan, as a run would make them. `source` names the base for
    the command line (default: the name or file `base` was given as, else its name). The schedule explorer's recipe
    choice, when it is another catalogue recipe, becomes the base."""
    if not isinstance(base, Recipe):
        source, base = source or base, start_recipe(base)
    source = source or base.name
    chosen = state.get("schedule", {}).get("recipe")
    if chosen is not None and chosen != source and chosen in RECIPES:
        base, source = RECIPES[chosen], chosen
    fields: dict[str, Any] = {}
    views: list[str] = []
    try:
        for name, values in state.items():
            if name not in MAPPERS:
                raise RecipeError(f"unknown explorer {name!r}; one of {', '.join(MAPPERS)}")
            mapper, shown = MAPPERS[name]
            views += [v for v in shown if v not in views]
            for part in mapper(base, values):
                if any(_differs(v, getattr(base, k), part.tol, k) for k, v in part.fields.items()):
                    fields.update({k: _snap(v, getattr(base, k), part.tol) for k, v in part.fields.items()})
        recipe = base.replace(**fields)
        plan_batch(recipe)
    except RsbkitError as exc:  # RecipeError, or a batch that does not split (DistributedError)
        return Change(base, source, {}, str(exc), tuple(views))
    return Change(base, source, fields, "", tuple(views))
