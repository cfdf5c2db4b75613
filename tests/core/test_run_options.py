"""How a run executes is declared once (rsbkit.core.run_options): train()'s Settings, the `rsbkit train` flags, the
train notebook and train_setup, and the torchrun command line all take every option they should, with the same
defaults, and a value survives the trip through a command line."""
from __future__ import annotations

import argparse
import dataclasses
import json

import pytest
import torch
from conftest import ROOT

from rsbkit.core.errors import RunError
from rsbkit.core.run_options import BY_NAME, RUN_OPTIONS, from_args, in_namespace, options_for, to_flags
from rsbkit.core.train import Settings
from rsbkit.workbook import train_and_evaluate
from rsbkit.workbook.cli import _parser

pytestmark = pytest.mark.cost(3)


def sample(option):
    """A valid value of `option` that is not its default."""
    if option.kind is bool:
        return not option.default
    if option.choices:
        return next(c for c in option.choices if c != option.default)
    if option.kind is int:
        return (option.default or option.minimum or 0) + 7
    return "some-value"


def test_settings_are_the_train_options():
    fields = {f.name: f.default for f in dataclasses.fields(Settings)}
    assert fields == {o.name: o.default for o in options_for("train")}
    assert Settings(check_every=3).check_every == 3 and Settings(device=torch.device("cpu")).device == torch.device("cpu")
    with pytest.raises(RunError, match="check_every=0: give an integer >= 1"):
        Settings(check_every=0)
    with pytest.raises(RunError, match="unknown run option 'stop_afterr'; did you mean 'stop_after'"):
        Settings.of(dict(stop_afterr=2))


def test_every_cli_option_is_a_flag_and_survives_a_command_line():
    """Non-default values of every option through to_flags (what torchrun and Slurm get) and back through the parser."""
    values = {o.name: sample(o) for o in options_for("cli")}
    args = _parser().parse_args(["train", "params/smoke.yaml", *to_flags(values)])
    assert from_args(args) == values
    defaults = _parser().parse_args(["train", "params/smoke.yaml"])
    assert from_args(defaults) == {o.name: o.default for o in options_for("cli")} and to_flags(from_args(defaults)) == []


def test_evaluate_and_bench_flags_are_the_declared_options():
    """`rsbkit evaluate` and `rsbkit bench` take some run options: their flags are the declarations', not copies."""
    subcommands = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    for command, names in (("evaluate", ("device", "limit_val")), ("bench", ("device", "workers"))):
        actions = {a.dest: a for a in subcommands[command]._actions}
        for o in map(BY_NAME.get, names):
            flag = actions[o.name]
            assert (flag.option_strings, flag.type, flag.default, flag.help) == ([o.flag], o.kind, o.default, o.help)
    args = _parser().parse_args(["evaluate", "runs/x", "--device", "cpu", "--limit-val", "64"])
    assert (args.device, args.limit_val) == ("cpu", 64)


def _parameters_cell() -> dict:
    nb = json.loads((ROOT / "notebooks" / "procedures" / "train.ipynb").read_text())
    cell = next(c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", []))
    namespace: dict = {}
    exec("".join(cell["source"]), namespace)
    return namespace


def test_the_train_notebook_takes_every_notebook_option(tmp_path, monkeypatch):
    """Its parameters cell names options with their declared defaults (a notebook shows progress as lines and writes
    'auto' and '' for None); every other option reaches train_setup through in_namespace (papermill -p) or `options`,
    and every train option reaches train()."""
    notebook_defaults = {"progress": "line", "device": "auto", "data_root": ""}
    cell = _parameters_cell()
    for o in options_for("notebook"):
        if o.name in cell:
            assert cell[o.name] == notebook_defaults.get(o.name, o.default), o.name
    assert cell["options"] == {}
    values = {o.name: sample(o) for o in options_for("notebook") if o.name not in ("resume", "progress", "device", "nproc")}
    values.update(device="cpu", progress="none", limit_train=64, limit_val=32, data_root=str(tmp_path))
    injected = {**cell, **values}  # what papermill -p puts into the notebook's namespace
    setup = train_and_evaluate.train_setup(recipe="params/smoke.yaml", out_dir=str(tmp_path / "run"), options={},
                                   **in_namespace(injected))
    assert {k: setup.options[k] for k in values} == values
    seen = {}
    monkeypatch.setattr(train_and_evaluate, "train", lambda recipe, data, out, **kwargs: seen.update(kwargs) or {})
    setup.train()
    expected = {o.name for o in options_for("train")} - {"log", "limit_train", "limit_val", "data_root"}  # data: loaded
    assert set(seen) == expected and seen["check_every"] == values["check_every"] == 57
    assert seen["eval_batch_size"] == values["eval_batch_size"] and seen["stop_after"] == values["stop_after"]


def test_torchrun_gets_every_option_the_notebook_was_given(tmp_path, embedded):
    from rsbkit.core.recipes import A3, smoke

    options = {o.name: sample(o) for o in options_for("cli") if o.name != "tensorboard"}
    options.update(device="cpu", nproc=2)
    setup = train_and_evaluate.TrainSetup(smoke(A3), embedded, tmp_path, "cpu", options=options, launch=dict(data="default"))
    cmd = setup.torchrun_command()
    args = _parser().parse_args(cmd[cmd.index("rsbkit") + 1:])
    assert from_args(args) == {**{o.name: o.default for o in options_for("cli")}, **{k: v for k, v in options.items()
                                                                                       if k != "nproc"}}


def test_an_option_is_declared_once_with_a_help_line():
    names = [o.name for o in RUN_OPTIONS]
    assert len(names) == len(set(names)) and all(o.help and o.entries for o in RUN_OPTIONS)
    assert in_namespace({"workers": 2, "recipe": "a3", "check_every": 9}) == {"workers": 2, "check_every": 9}
