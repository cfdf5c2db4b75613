"""What notebooks, sweeps, studies and the command line call: the train and evaluate notebooks' setups
(``train_and_evaluate``), the seed, ablation, comparison and report studies (``run_studies``) and their
arithmetic (``study_stats``), the architecture, transfer and ResNet-RS scaling studies
(``architecture_studies``), the sweep runner and cluster executors (``sweep``, ``cluster``), run tables
(``table``), figures, the paper's tables (``paper``), benchmarks (``bench``) and the CLI (``cli``). Built on
``rsbkit.core``; the teaching explorers (``rsbkit.explore``) do not use it."""
import atexit
import gc
import os

FAST_EXIT = "RSBKIT_FAST_EXIT"


def fast_exit() -> None:
    """Skip the interpreter's final garbage collections in a process rsbkit started for itself: registers
    :func:`gc.freeze` to run after every exit handler registered later (torch's, kaleido's, multiprocessing's). A
    process that imported torch, timm and plotly otherwise spends 1 to 2 s of CPU in them (measured on 2 cores:
    the train notebook's kernel shut down in 2.9 s, in 0.7 to 0.9 s with it). Python does not promise to finalize
    objects alive at exit, and rsbkit closes its files, checkpoints and writers itself.

    The command line calls it and sets RSBKIT_FAST_EXIT=1 for what it starts (papermill kernels, torchrun workers,
    sweep points); importing rsbkit.workbook calls it only where that variable is 1 (the test suite sets it). A
    user's own script or kernel is left as it is."""
    atexit.register(gc.freeze)


if os.environ.get(FAST_EXIT) == "1":
    fast_exit()
