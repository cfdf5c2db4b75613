"""Command line: ``python -m rsbkit {recipe,train,evaluate,data,run,sweep,bench} ...``.

Bad input prints one line (``rsbkit: error: ...``) and exits with status 2; no traceback.
``train`` runs under torchrun as it is: ``torchrun --nproc_per_node=N -m rsbkit train CONFIG.yaml ...``.
"""
from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
from collections.abc import Sequence
from typing import Optional

import yaml

from ..core.data import load_data
from ..core.distributed import launcher_env
from ..core.errors import RecipeError, RsbkitError
from ..core.evaluate import evaluate, load_data_for, load_model, resolution_sweep
from ..core.export import export_for_timm
from ..core.recipes import from_timm_args, load_recipe, params_yaml, parse_overrides, timm_command
from ..core.run_options import add_flags, from_args, train_values
from ..core.runs import default_run_dir
from ..core.train import train
from . import FAST_EXIT, fast_exit
from .bench import config_from_args, run_bench
from .cluster import ClusterOptions, run_cluster_sweep
from .plan import study_plan
from .sweep import find_notebook, load_sweep, run_point, run_sweep, single_point
from .table import epoch_hooks
from .train_and_evaluate import paper_table, reported_of, run_curves


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line instead of usage + message
        self.exit(2, f"rsbkit {self.prog.split()[-1]}: error: {message} (see --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="rsbkit", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("recipe", help="print a resolved recipe as YAML")
    p.add_argument("source", nargs="?", help="recipe name (a1, a2, a3, torchvision, resnet_rs50 ...) or YAML file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a field")
    p.add_argument("--from-timm", default=None, metavar="ARGS_YAML",
                   help="the recipe that trains what a timm train.py run trained, from its args.yaml, as a params file")
    p.add_argument("--timm-command", action="store_true",
                   help="print the train.py (torchrun with --nproc > 1) command that trains this recipe, and where it differs")
    p.add_argument("--nproc", type=int, default=1,
                   help="processes: those the train.py run used (--from-timm; args.yaml lacks it), or the command's (--timm-command)")
    p.add_argument("--data-dir", default="DATA", help="--timm-command: the dataset folder to write into the command")

    p = sub.add_parser("train", help="train a recipe and write a run folder")
    p.add_argument("config", help="YAML file (params/a3.yaml ...) or recipe name")
    p.add_argument("--data", default="default", help="'default', 'fashion-mnist', a timm name (torch/cifar10) or a folder")
    p.add_argument("--out", default=None, help="run folder (default runs/<recipe>-<time>)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a field")
    add_flags(p.add_argument_group("how the run executes (rsbkit.core.run_options)"))

    p = sub.add_parser("evaluate", help="top-1 of a run or checkpoint over test resolutions and crop ratios")
    p.add_argument("source", help="run folder, checkpoint file (rsbkit's, or timm train.py's model_best.pth.tar), "
                                  "or timm pretrained name (needs a network)")
    p.add_argument("--data", default="default", help="a dataset, or a folder of class folders without train/ (ImageNet-V2: "
                                                      "folders named 0..999 are class indices)")
    p.add_argument("--res", type=int, nargs="+", default=None, help="test resolutions (default: the recipe's)")
    p.add_argument("--crop", type=float, nargs="+", default=None, help="crop ratios (default: the recipe's)")
    p.add_argument("--ema", action="store_true", help="evaluate the EMA weights")
    p.add_argument("--real", default=None, metavar="real.json", help="ImageNet ReaL labels file")
    p.add_argument("--v2", default=None, metavar="PATH", help="--paper-table: ImageNet-V2's folder (class folders 0..999)")
    p.add_argument("--paper-table", action="store_true",
                   help="val / ReaL (--real) / V2 (--v2) top-1 at the first --res and --crop, beside the paper's row")
    add_flags(p, names=("device", "limit_val"))

    p = sub.add_parser("export", help="write a run's weights and pretrained config for timm.create_model('local-dir:OUT')")
    p.add_argument("source", help="run folder or checkpoint")
    p.add_argument("out", help="folder to write (model.safetensors, pytorch_model.bin, config.json)")
    p.add_argument("--ema", action="store_true", help="the EMA weights")

    p = sub.add_parser("data", help="check a dataset and print its size and classes")
    p.add_argument("spec", nargs="?", default="default")
    p.add_argument("--data-root", default=None)

    p = sub.add_parser("run", help="execute a notebook with papermill into a run folder (plus its HTML export)")
    p.add_argument("notebook", help="e.g. notebooks/procedures/train.ipynb")
    p.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                   help="a notebook parameter; VALUE is read as YAML (2, 1e-3, [160, 224], {epochs: 2})")
    p.add_argument("--out", default=None, help="run folder (default runs/<recipe or notebook>-<time>)")
    p.add_argument("--kernel", default="python3")

    p = sub.add_parser("sweep", help="run every point of a sweep file through papermill (skips completed points)")
    p.add_argument("file", help="params/sweeps/NAME.yaml")
    p.add_argument("--jobs", type=int, default=1, help="points at once (one GPU each where there are several)")
    p.add_argument("--out", default=None, help="folder of the point folders (default: the file's 'out')")
    p.add_argument("--dry-run", action="store_true", help="validate and list the points; run nothing")
    p.add_argument("--executor", default="pool", choices=("pool", "local", "slurm"),
                   help="pool: papermill processes here (default); slurm: one Slurm job per point through submitit; "
                        "local: the same submitit jobs as processes here")
    c = p.add_argument_group("cluster jobs (--executor slurm / local)")
    c.add_argument("--partition", default=None, help="Slurm partition")
    c.add_argument("--gpus", type=int, default=0, help="GPUs per point (also the train notebook's nproc: torchrun)")
    c.add_argument("--cpus", type=int, default=None, help="CPUs per point")
    c.add_argument("--time", type=int, default=24 * 60, metavar="MIN",
                   help="time limit per attempt, minutes; a timed-out point is requeued and resumes from last.pt")
    c.add_argument("--mem", type=float, default=None, metavar="GB", help="memory per point")
    c.add_argument("--account", default=None)
    c.add_argument("--qos", default=None)
    c.add_argument("--constraint", default=None, help="Slurm --constraint, e.g. h100")
    c.add_argument("--max-requeues", type=int, default=3, help="time-outs a point may resume from")
    c.add_argument("--signal-before", type=int, default=None, metavar="S",
                   help="Slurm signals a point this many seconds before its time limit, to save and requeue "
                        "(default 90; under a --time of 3 minutes, --time minus 45 s)")
    c.add_argument("--no-wait", action="store_true", help="slurm: submit and return (rerun the sweep later to collect)")
    c.add_argument("--collect", action="store_true",
                   help="slurm: submit nothing; wait for this sweep's queued and running jobs and print the table")

    p = sub.add_parser("bench", help="images/s of the model step, the input path and training end to end; writes a JSON")
    p.add_argument("--quick", action="store_true", help="tiny sizes: seconds on a CPU")
    add_flags(p, names=("device",))
    p.add_argument("--data", default=None,
                   help="dataset for the input and end-to-end entries: your ImageNet folder, 'default', or 'jpegs' "
                        "(a folder of ImageNet-like JPEGs this command writes; the default on CUDA)")
    p.add_argument("--recipe", default=None, help="recipe name or YAML (default: a3 on CUDA, params/demo.yaml on CPU)")
    p.add_argument("--model", default=None)
    p.add_argument("--res", type=int, default=None, help="train resolution, px")
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--compile", action="store_true", help="torch.compile the model step")
    p.add_argument("--steps", type=int, default=None, help="measured steps per entry")
    add_flags(p, names=("workers",))
    p.add_argument("--jpegs", type=int, default=None, help="files in the generated JPEG folder (default 4096)")
    p.add_argument("--out", default="benchmarks/results", help="folder of the JSON files")
    p.add_argument("--cache", default=None, help="where the generated JPEGs are kept (default ~/.cache/rsbkit/bench)")
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the process is, so that what it started is stopped on the way out as for Ctrl-C."""


def _terminate(signum, frame):
    raise Terminated(f"signal {signal.Signals(signum).name}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    if argv is None:  # a process of its own (python -m rsbkit, the rsbkit script), not a call from Python
        os.environ[FAST_EXIT] = "1"  # and the kernels, torchrun workers and sweep points it starts
        fast_exit()
        # SIGTERM (a timeout's, a scheduler's) stops a notebook or sweep whole: its kernels save what they have and end.
        # SIGKILL cannot be caught: the children end by their parent-death signal (rsbkit.core.processes).
        signal.signal(signal.SIGTERM, _terminate)
    args = _parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # the command line, for records
    try:
        return _run(args)
    except RsbkitError as exc:
        print(f"rsbkit {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print(f"rsbkit {args.command}: {'terminated' if isinstance(exc, Terminated) else 'interrupted'}", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130


def _recipe(args: argparse.Namespace) -> int:
    if args.from_timm:
        recipe, notes = from_timm_args(args.from_timm, world_size=args.nproc)
        print(params_yaml(recipe.replace(**parse_overrides(args.overrides)), notes), end="")
        return 0
    if args.source is None:
        raise RecipeError("give a recipe name or YAML file, or --from-timm ARGS_YAML")
    recipe = load_recipe(args.source, **parse_overrides(args.overrides))
    print(timm_command(recipe, args.nproc, args.data_dir) if args.timm_command else recipe.to_yaml(), end="")
    return 0


def _train(args: argparse.Namespace) -> int:
    recipe = load_recipe(args.config, **parse_overrides(args.overrides))
    out = args.out or default_run_dir(recipe)
    options = from_args(args)
    with epoch_hooks(out, tensorboard=options["tensorboard"]) as on_epoch:
        result = train(recipe, args.data, out, on_epoch=on_epoch, **train_values(options))
    if launcher_env().main:  # the curves, as the train notebook leaves them in its run folder (train's last line names it)
        files = run_curves(result["run_dir"])
        print("curves: " + (", ".join(str(f) for f in files) or "not drawn (plotly is not installed: pip install "
                                                                     "'rsbkit[notebooks]')"))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    model, recipe = load_model(args.source, ema=args.ema, device="cpu")
    data = load_data_for(model, args.data, limit_val=args.limit_val)
    res = args.res or [recipe.test_res if recipe else 224]
    crops = args.crop or [recipe.crop_pct if recipe else 0.95]
    interp = recipe.interpolation if recipe else "bicubic"
    if args.paper_table:
        table = paper_table(model, reported_of(args.source, recipe), data, test_res=res[0], crop_pct=crops[0], interpolation=interp,
                            real_json=args.real, v2=args.v2, device=args.device)
        print(table.to_string(float_format=lambda v: f"{v:.2f}", na_rep="-"))
        print(f"paper: {table.attrs['source']}")
    elif args.real:
        print(evaluate(model, data, test_res=res[0], crop_pct=crops[0], interpolation=interp,
                       device=args.device, real_json=args.real))
    else:
        print(resolution_sweep(model, data, res, crops, interpolation=interp, device=args.device).to_string(index=False))
    return 0


def _export(args: argparse.Namespace) -> int:
    out = export_for_timm(args.source, args.out, ema=args.ema)
    print(f"wrote {out}: timm.create_model('local-dir:{out.resolve()}', pretrained=True)")
    return 0


def _data(args: argparse.Namespace) -> int:
    data = load_data(args.spec, root=args.data_root)
    for key, value in data.describe().items():
        print(f"{key}: {value}")
    print(f"classes: {', '.join(map(str, data.classes[:20]))}{' ...' if data.num_classes > 20 else ''}")
    return 0


def _run_notebook(args: argparse.Namespace) -> int:
    params = {name: yaml.safe_load(value) for name, value in args.parameter}
    notebook = find_notebook(args.notebook)
    point = single_point(notebook, params, args.out)
    plan = study_plan(notebook, point.parameters)  # a study running sweep files: how many points, how long
    if plan is not None:
        print(plan.line())
    print(f"running {notebook} into {point.run_dir}")
    res = run_point(notebook, point, kernel=args.kernel)
    if res.status != "completed":
        print(f"rsbkit run: failed: {res.error}\nthe failed notebook: {res.notebook} "
              f"(log: {point.run_dir / 'papermill.log'})", file=sys.stderr)
        return 1
    print(f"executed notebook: {res.notebook} (HTML beside it); run folder: {point.run_dir}")
    return 0


def _sweep(args: argparse.Namespace) -> int:
    sweep = load_sweep(args.file, out=args.out)
    if args.dry_run:
        for point in sweep.points:
            print(f"{point.run_dir}: {point.parameters}")
        return 0
    if args.executor == "pool":
        table = run_sweep(sweep, jobs=args.jobs)
    else:
        options = ClusterOptions(partition=args.partition, gpus=args.gpus, cpus=args.cpus, time_min=args.time,
                                 mem_gb=args.mem, account=args.account, qos=args.qos, constraint=args.constraint,
                                 max_requeues=args.max_requeues,
                                 signal_s=args.signal_before)
        table = run_cluster_sweep(sweep, executor=args.executor, options=options, jobs=args.jobs,
                                  block=not args.no_wait, collect=args.collect)
        if table is None:
            return 0
    return 1 if (table["status"] == "failed").any() else 0


def _bench(args: argparse.Namespace) -> int:
    run_bench(config_from_args(args), args.out, cache=args.cache, command=shlex.join(["python", "-m", "rsbkit", *args.argv]))
    return 0


# each subcommand of _parser, and the function that runs it (its exit status)
COMMANDS = {"recipe": _recipe, "train": _train, "evaluate": _evaluate, "export": _export, "data": _data,
            "run": _run_notebook, "sweep": _sweep, "bench": _bench}


def _run(args: argparse.Namespace) -> int:
    return COMMANDS[args.command](args)
