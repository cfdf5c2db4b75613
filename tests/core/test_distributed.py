"""torchrun / DistributedDataParallel on CPU with gloo: the global batch split over processes gives the
same weights as one process, a 2-process checkpoint resumes in 1 process, and bad launches say why."""
from __future__ import annotations

import collections
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch
from clock import limit
from conftest import ROOT, free_port, run_whole

from rsbkit.core.distributed import Dist, launcher_env, pick_backend, torchrun_command
from rsbkit.core.errors import DistributedError
from rsbkit.core.recipes import A3, plan_batch
from rsbkit.core.train import train

pytestmark = pytest.mark.cost(115)  # seconds in the suite on 2 cores: files start costliest first (conftest)

# augmentation randomness off (no RandAugment, flip, crop jitter, mixup), and a model without
# BatchNorm (ConvNeXt's LayerNorm is per image): 1 and 2 processes then compute the same step
DETERMINISTIC = dict(
    name="ddp", model="test_convnext", epochs=2, warmup_epochs=0, batch_size=16, lr_base_size=16,
    train_res=32, test_res=32, aa=None, hflip=0.0, scale=(1.0, 1.0), ratio=(1.0, 1.0), mixup=0.0, cutmix=0.0,
    train_interpolation="bicubic",  # `random` draws bilinear or bicubic per image: augmentation randomness too
)
DATA_ARGS = ["--limit-train", "64", "--limit-val", "32", "--device", "cpu", "--workers", "0", "--progress", "line"]


def torchrun(nproc: int, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return run_whole(torchrun_command(nproc, [*args]), timeout=timeout, cwd=ROOT)


def weights(run_dir) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "last.pt", weights_only=True)["model"]


def max_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


# ---------------------------------------------------------------- the batch split


def test_global_batch_is_split_over_processes_with_accumulation():
    plan = plan_batch(A3, world_size=8)  # A3: batch 2048, LR 8e-3 at 2048
    assert (plan.micro_batch, plan.accum_steps, plan.effective_batch, plan.lr) == (256, 1, 2048, 8e-3)
    plan = plan_batch(A3, world_size=8, micro_batch=64)  # 256 per process does not fit: 4 passes of 64
    assert (plan.micro_batch, plan.accum_steps, plan.per_rank, plan.lr) == (64, 4, 256, 8e-3)
    assert "8 process(es) x 64 images x 4 accumulation step(s)" in plan.rule
    # grad_accum to the recipe's 2048 from batch 256, over 4 processes: 64 each, 8 accumulation steps
    plan = plan_batch(A3.replace(batch_size=256, grad_accum=True), world_size=4)
    assert (plan.micro_batch, plan.accum_steps, plan.effective_batch, plan.lr) == (64, 8, 2048, 8e-3)
    assert plan_batch(A3) == plan_batch(A3, world_size=1, micro_batch=2048)


@pytest.mark.parametrize("world, micro, message", [
    (3, None, "global batch of 2048 images cannot be split over 3 processes"),
    (8, 100, "micro_batch 100 does not divide the 256 images each of 8 process(es) takes"),
    (0, None, "world_size=0"),
])
def test_batch_that_cannot_be_split_names_the_numbers(world, micro, message):
    with pytest.raises(DistributedError, match=message.replace("(", r"\(").replace(")", r"\)")):
        plan_batch(A3, world_size=world, micro_batch=micro)


# ---------------------------------------------------------------- the launcher environment


@pytest.mark.parametrize("env, message", [
    ({"RANK": "0"}, "RANK=0 is set but WORLD_SIZE, LOCAL_RANK is not"),
    ({"RANK": "2", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "h", "MASTER_PORT": "1"}, "RANK=2, LOCAL_RANK=0, WORLD_SIZE=2 are inconsistent"),
    ({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}, "MASTER_ADDR, MASTER_PORT is not set: no rendezvous endpoint"),
    ({"RANK": "x", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}, "must be integers"),
])
def test_inconsistent_launcher_environment_is_named(env, message):
    with pytest.raises(DistributedError, match=message):
        launcher_env(env)


def test_launcher_environment_read():
    assert launcher_env({}) == Dist() and not Dist().enabled and Dist().main
    job = launcher_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "MASTER_ADDR": "n0", "MASTER_PORT": "29500"})
    assert (job.rank, job.world_size, job.local_rank, job.enabled, job.main) == (3, 4, 1, True, False)


def test_backend_choice_and_unusable_backends():
    assert pick_backend(torch.device("cpu")) == "gloo"
    with pytest.raises(DistributedError, match="backend 'nccl' needs CUDA devices, but this run's device is cpu"):
        pick_backend(torch.device("cpu"), "nccl")
    with pytest.raises(DistributedError, match="'mpi' is not one of nccl, gloo"):
        pick_backend(torch.device("cpu"), "mpi")


def test_torchrun_command_single_and_multi_node():
    one = torchrun_command(4, ["params/a3.yaml"], python="python")
    assert one == ["python", "-m", "torch.distributed.run", "--nproc_per_node=4", "--standalone",
                   "-m", "rsbkit", "train", "params/a3.yaml"]
    multi = torchrun_command(8, ["x.yaml"], nnodes=2, rdzv_endpoint="node0:29400", rdzv_id="a3", python="python")
    assert "--nnodes=2" in multi and "--rdzv-endpoint=node0:29400" in multi and "--standalone" not in multi
    with pytest.raises(DistributedError, match="nnodes=2 needs rdzv_endpoint"):
        torchrun_command(8, [], nnodes=2)


# ---------------------------------------------------------------- real processes


@pytest.fixture(scope="module")
def recipe_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("ddp") / "ddp.yaml"
    path.write_text(A3.replace(**DETERMINISTIC).to_yaml())
    return path


@pytest.fixture(scope="module")
def standalone_two(recipe_file, tmp_path_factory):
    """Two processes under ``torchrun --standalone``, same global batch as one (8 images each)."""
    out = tmp_path_factory.mktemp("two")
    two = torchrun(2, str(recipe_file), "--out", str(out), *DATA_ARGS)
    assert two.returncode == 0, two.stdout[-3000:] + two.stderr[-3000:]
    return out, two


def test_two_processes_match_one_and_resume_into_one(recipe_file, standalone_two, tmp_path, cli):
    # one process, in this process
    single = train(recipe_file, "default", tmp_path / "one", device="cpu", workers=0, limit_train=64, limit_val=32,
                   progress="none", log=lambda s: None)
    two_dir, two = standalone_two
    assert "2 processes (gloo)" in two.stdout and "2 process(es) x 8 images x 1 accumulation step(s)" in two.stdout
    result = json.loads((two_dir / "result.json").read_text())
    assert result["status"] == "completed" and result["world_size"] == 2 and result["epochs_done"] == 2
    assert result["resolved"]["steps_per_epoch"] == single["resolved"]["steps_per_epoch"] == 4
    assert max_difference(weights(tmp_path / "one"), weights(two_dir)) < 1e-5
    # metrics are reduced over processes: the same numbers as the single process
    assert result["final_top1"] == single["final_top1"]
    assert result["final_loss"] == pytest.approx(single["final_loss"], abs=1e-4)
    # only rank 0 printed (one 'done' line) and wrote the folder
    assert two.stdout.count("done: top-1") == 1
    # a 2-process run accumulating 2 micro-batches of 4 per step, stopped after epoch 1, resumes in 1 process
    # (8 images in one pass) to the same weights
    split = tmp_path / "split"
    first = torchrun(2, str(recipe_file), "--out", str(split), "--stop-after", "1", "--micro-batch", "4", *DATA_ARGS)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "2 process(es) x 4 images x 2 accumulation step(s)" in first.stdout
    assert json.loads((split / "result.json").read_text())["status"] == "stopped"
    done = cli("train", str(recipe_file), "--out", str(split), "--resume", *DATA_ARGS)
    assert done.returncode == 0, done.stderr
    assert "resumed from" in done.stdout and "after epoch 1/2" in done.stdout
    assert max_difference(weights(tmp_path / "one"), weights(split)) < 1e-5


def two_nodes(*args: str) -> list[subprocess.Popen]:
    """Two torchrun launchers of one process each, meeting at a c10d rendezvous on 127.0.0.1: two "nodes".
    The first hosts the rendezvous store, as node0 at the endpoint does on a cluster (on one host both would try,
    and the one that binds first wins: under load that was sometimes the second); it also has the lower pid, so
    torch's rendezvous (participants sorted by host, then pid) makes it rank 0."""
    endpoint, run_id = f"127.0.0.1:{free_port()}", f"test-{time.monotonic_ns()}"
    cmd = torchrun_command(1, [*args], nnodes=2, rdzv_endpoint=endpoint, rdzv_id=run_id)
    at = cmd.index("rsbkit") - 1  # torchrun's own options end before `-m rsbkit`
    # torchrun sets OMP_NUM_THREADS=1 only for several processes per node; as --standalone 2 did, so the
    # kernels sum in the same order and the weights can be compared bit for bit
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return [subprocess.Popen([*cmd[:at], f"--rdzv-conf=is_host={host}", *cmd[at:]], cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, env=env)
            for host in (1, 0)]


def test_two_nodes_train_like_two_local_processes(recipe_file, standalone_two, tmp_path):
    """``torchrun --nnodes=2 --nproc_per_node=1 --rdzv-backend=c10d``: the same weights as the 2-process
    ``--standalone`` run (which matches one process, test above), rank 0 alone writes the folder."""
    nodes = two_nodes(str(recipe_file), "--out", str(tmp_path / "nodes"), *DATA_ARGS)
    outs = [node.communicate(timeout=limit(300))[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outs[0][-3000:] + outs[1][-3000:]
    a, b = weights(standalone_two[0]), weights(tmp_path / "nodes")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    result = json.loads((tmp_path / "nodes" / "result.json").read_text())
    assert result["status"] == "completed" and result["world_size"] == 2
    assert sum(out.count("done: top-1") for out in outs) == 1  # one rank printed, one wrote


def test_a_lost_node_stops_the_other_with_a_message(recipe_file, tmp_path, cli):
    """A node dies mid-run (its launcher and its worker killed at once): the other stops within seconds,
    saying so, instead of waiting in a collective. Gloo sees the peer's sockets close; a peer that hangs
    alive would be noticed at the process group's timeout (torch's default, 30 minutes for gloo)."""
    import psutil

    out = tmp_path / "run"
    nodes = two_nodes(str(recipe_file), "--out", str(out), "--set", "epochs=200", *DATA_ARGS)
    try:
        deadline = time.monotonic() + limit(180)
        while not (out / "last.pt").exists() and time.monotonic() < deadline and all(n.poll() is None for n in nodes):
            time.sleep(0.1)
        assert (out / "last.pt").exists(), nodes[0].communicate(timeout=limit(60))[0][-3000:]
        # one writer across the nodes: a third process cannot train into the folder
        third = cli("train", str(recipe_file), "--out", str(out), *DATA_ARGS)
        assert third.returncode == 2 and "is in use by another writer" in third.stderr, third.stderr

        def rank(node) -> str:
            [worker] = psutil.Process(node.pid).children()
            return worker.environ()["RANK"]

        # node1 is lost; losing node0 takes the rendezvous store with it, and torchrun on the other node then
        # ends with its own "The connection to the C10d store has failed"
        lost = nodes[1]
        assert rank(lost) == "1"
        for proc in [psutil.Process(lost.pid), *psutil.Process(lost.pid).children(recursive=True)]:
            proc.kill()
        t0 = time.monotonic()
        [survivor] = [n for n in nodes if n is not lost]
        said = survivor.communicate(timeout=limit(120))[0]
        took = time.monotonic() - t0
    finally:
        for node in nodes:
            for proc in psutil.Process(node.pid).children(recursive=True) if node.poll() is None else []:
                proc.kill()
            node.kill()
    assert survivor.returncode != 0 and took < 30, (took, said[-3000:])
    # gloo says "Connection closed by peer" or "Read error ...: Connection reset by peer", as the timing falls
    assert re.search(r"rsbkit train: error: another process of this 2-process run stopped \(gloo: [^)]*Connection "
                     r"(closed|reset) by peer", said), said[-3000:]
    assert "so rank 0 stops too" in said and "start the run again on every node with --resume" in said
    result = json.loads((out / "result.json").read_text())
    assert result["status"] == "failed" and result["error"].startswith("DistributedError: another process")


def test_bad_launch_fails_naming_the_values(recipe_file, tmp_path):
    bad = torchrun(3, str(recipe_file), "--out", str(tmp_path / "bad"), *DATA_ARGS)
    assert bad.returncode != 0
    assert "rsbkit train: error: the global batch of 16 images cannot be split over 3 processes" in bad.stderr
    assert not (tmp_path / "bad" / "last.pt").exists()


def test_sigterm_records_interrupted_and_keeps_the_checkpoint(recipe_file, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "rsbkit", "train", str(recipe_file), "--out", str(out),
                             "--set", "epochs=200", *DATA_ARGS], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + limit(120)
    while not (out / "last.pt").exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
    assert (out / "last.pt").exists(), proc.communicate()[1][-2000:]
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=limit(60))
    assert proc.returncode == 130 and "rsbkit train: interrupted" in err
    result = json.loads((out / "result.json").read_text())
    assert result["status"] == "interrupted" and result["error"] == "Terminated: signal SIGTERM"
    state = torch.load(out / "last.pt", weights_only=True)
    assert state["epoch"] >= 1 and state["epoch"] == len(state["history"])


def test_train_notebook_launches_torchrun_and_streams_its_log(recipe_file, tmp_path, cli):
    out = tmp_path / "nb"
    res = cli("run", "notebooks/procedures/train.ipynb", "-p", "recipe", str(recipe_file), "-p", "nproc", "2",
                  "-p", "limit_train", "64", "-p", "limit_val", "32", "-p", "device", "cpu", "-p", "workers", "0",
                  "--out", str(out))
    assert res.returncode == 0, res.stderr[-3000:]
    result = json.loads((out / "result.json").read_text())
    assert result["world_size"] == 2 and result["status"] == "completed"
    nb = json.loads((out / "train.ipynb").read_text())
    streamed = "".join(o.get("text", "") if isinstance(o.get("text", ""), str) else "".join(o["text"])
                       for c in nb["cells"] for o in c.get("outputs", []) if o.get("output_type") == "stream")
    assert "-m torch.distributed.run --nproc_per_node=2 --standalone -m rsbkit train" in streamed
    assert "epoch   2/2" in streamed and "2 processes (gloo)" in streamed
    assert (out / "curves.png").is_file()  # the live figure was fed from metrics.csv


@pytest.mark.parametrize("repeats", [0, 3])
def test_ranks_deal_out_the_one_process_order(embedded, repeats):
    """Step k holds the same images on 1, 2 or 4 processes, and with the same number of forward passes
    per step each pass holds the same images (1 process x 4 accumulation steps = 4 processes x 1):
    torch's DistributedSampler order, or timm's RepeatAugSampler with A1/A2's 3 repeats."""
    from rsbkit.core.data import StepSampler, epoch_order

    def train_sampler(dataset, recipe, plan, *, seed, rank=0):  # rank's indices of the epoch drawn from seed
        return StepSampler(epoch_order(dataset, recipe, seed), plan, rank)

    recipe = A3.replace(aug_repeats=repeats, batch_size=64)
    order = epoch_order(embedded.train, recipe, seed=7)

    def passes(world, micro):  # every forward pass of the epoch, as (step, set of indices)
        plan = plan_batch(recipe, world_size=world, micro_batch=micro)
        out = []
        for rank in range(world):
            idx = list(train_sampler(embedded.train, recipe, plan, seed=7, rank=rank))
            out += [(i // plan.per_rank, frozenset(idx[i:i + micro])) for i in range(0, len(idx), micro)]
        return sorted(out, key=lambda p: (p[0], sorted(p[1])))

    one, four, mixed = passes(1, 16), passes(4, 16), passes(2, 16)
    assert one == four == mixed and len(one) == 4 * (len(order) // 64)
    steps = collections.defaultdict(set)
    for step, images in one:
        steps[step] |= images
    assert [steps[k] for k in range(3)] == [set(order[64 * k:64 * (k + 1)]) for k in range(3)]
    # with one pass per process, rank r takes positions r, r + world, ... as timm's and torch's samplers deal them
    plan = plan_batch(recipe, world_size=4)
    assert list(train_sampler(embedded.train, recipe, plan, seed=7, rank=1))[:16] == order[1:64:4]
    assert order != epoch_order(embedded.train, recipe, seed=8)  # the seed sets the order
    if repeats:  # each image comes 3 times in a row in the order, and never twice in one forward pass
        assert order[0] == order[1] == order[2]
        assert all(len(images) == 16 for _, images in one)


BN_PROBE = """
import os, sys, torch
import rsbkit.core.distributed as d
out, recipe = sys.argv[1], sys.argv[2]
real = d.distribute_bn
def probe(model, *args, **kwargs):  # each rank's running statistics before and after timm's distribute_bn
    def save(when):
        state = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
        torch.save(state, f"{out}/bn-{when}-rank{os.environ['RANK']}.pt")
    save("own")
    torch.save({k: v.clone() for k, v in model.named_parameters()}, f"{out}/params-rank{os.environ['RANK']}.pt")
    real(model, *args, **kwargs)
    save("reduced")
d.distribute_bn = probe
from rsbkit.core.data import SkippedImage, TrainInput
if os.environ["RANK"] == "1":  # rank 1's second micro-batch (a step's last) has no readable image
    prepare, calls = TrainInput._prepare, []
    def unreadable(self, *args):
        calls.append(1)
        return (None, None, [SkippedImage("injected.jpg", "unreadable")]) if len(calls) == 2 else prepare(self, *args)
    TrainInput._prepare = unreadable
import rsbkit.core.train as t
t.train(recipe, "default", out + "/run", device="cpu", workers=0, limit_train=64, limit_val=32, progress="none")
"""


def test_batchnorm_statistics_are_averaged_over_processes(tmp_path):
    """timm's --dist-bn reduce: before evaluating and saving, every rank holds the mean of the ranks' running
    statistics, which each rank had gathered from its own images. The same run has a micro-batch on rank 1 whose
    images were all unreadable: that rank still takes part in the step's all-reduce and optimizer step (it used to
    skip them while rank 0 waited: a hang), so the ranks' weights stay equal and every step is counted."""
    probe = tmp_path / "probe.py"
    probe.write_text(BN_PROBE)
    recipe = tmp_path / "bn.yaml"
    recipe.write_text(A3.replace(**{**DETERMINISTIC, "model": "resnet10t", "epochs": 1}).to_yaml())  # BatchNorm
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone", str(probe), str(tmp_path),
           str(recipe)]
    res = run_whole(cmd, timeout=300, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-3000:]
    params = [torch.load(tmp_path / f"params-rank{r}.pt") for r in range(2)]
    assert max_difference(*params) == 0
    run = json.loads((tmp_path / "run" / "result.json").read_text())
    assert run["status"] == "completed" and run["resolved"]["steps_per_epoch"] == 4
    assert (tmp_path / "run" / "metrics.csv").read_text().splitlines()[-1].split(",")[1] == "4"
    own, reduced = ([torch.load(tmp_path / f"bn-{when}-rank{r}.pt") for r in range(2)] for when in ("own", "reduced"))
    assert max_difference(*own) > 1e-4  # the ranks saw different images
    assert max_difference(*reduced) == 0
    mean = {k: (own[0][k] + own[1][k]) / 2 for k in own[0]}
    assert max_difference(reduced[0], mean) < 1e-6  # the statistics are the ranks' mean
    saved = torch.load(tmp_path / "run" / "last.pt", weights_only=True)["model"]
    assert max_difference({k: saved[k] for k in mean}, reduced[0]) == 0


@pytest.mark.parametrize("recipe, world, reduced", [
    (A3, 2, [True]), (A3.replace(dist_bn="broadcast"), 2, [False]),
    (A3.replace(dist_bn="none"), 2, []), (A3.replace(sync_bn=True), 2, []), (A3, 1, []),
])
def test_batchnorm_statistics_are_made_equal_only_where_they_differ(recipe, world, reduced, monkeypatch):
    """timm's distribute_bn is called with reduce (mean) or broadcast (rank 0's); dist_bn: none, SyncBatchNorm
    (already global) and one process leave the buffers alone."""
    from rsbkit.core import distributed

    calls = []
    monkeypatch.setattr(distributed, "distribute_bn", lambda model, world_size, reduce: calls.append(reduce))
    distributed.sync_bn_buffers(Dist(0, world, 0, "gloo") if world > 1 else Dist(), torch.nn.BatchNorm2d(3), recipe)
    assert calls == reduced


def test_stop_after_must_be_an_epoch(recipe_file, tmp_path):
    from rsbkit.core.errors import RunError

    with pytest.raises(RunError, match=r"stop_after=0: give an integer >= 1, or None \(end this call after that epoch"):
        train(recipe_file, "default", tmp_path / "run", device="cpu", stop_after=0)
    assert not (tmp_path / "run").exists()


def _flag_on_rank(rank: int, init: str, answers) -> None:
    import torch.distributed as dist

    from rsbkit.core.distributed import any_rank

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    try:
        job = Dist(rank, 2, rank, "gloo")
        answers.put((rank, any_rank(job, torch.tensor(rank == 1)), any_rank(job, torch.tensor(False))))
    finally:
        dist.destroy_process_group()


def test_a_non_finite_loss_on_one_rank_stops_every_rank(tmp_path):
    """The inf/NaN flag is agreed over ranks (rank 1's loss was not finite, rank 0's was): both stop with the same error,
    instead of one raising while torchrun kills the others as 'interrupted'."""
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    answers = ctx.Queue()
    init = f"file://{tmp_path / 'rendezvous'}"
    procs = [ctx.Process(target=_flag_on_rank, args=(r, init, answers)) for r in range(2)]
    for p in procs:
        p.start()
    got = sorted(answers.get(timeout=limit(120)) for _ in procs)
    for p in procs:
        p.join(timeout=limit(60))
    assert got == [(0, True, False), (1, True, False)]


def test_only_a_collective_that_lost_its_peer_becomes_the_lost_process_error():
    from rsbkit.core.distributed import lost_peer

    job = Dist(1, 4, 1, "gloo")
    gone = RuntimeError("[../gloo/transport/tcp/pair.cc:561] Connection closed by peer [10.0.0.2]:4100. "
                        "This is typically caused by a remote worker crashing.")
    err = lost_peer(job, gone, epoch=7)
    assert isinstance(err, DistributedError)
    assert str(err).startswith("another process of this 4-process run stopped (gloo: Connection closed by peer "
                               "[10.0.0.2]:4100), so rank 1 stops too")
    assert "last.pt (epoch 7) is kept" in str(err)
    assert lost_peer(Dist(), gone, epoch=7) is None  # one process: nothing to lose
    assert lost_peer(job, RuntimeError("shape mismatch"), epoch=7) is None  # a bug of its own stays itself
    assert lost_peer(job, KeyboardInterrupt(), epoch=7) is None
