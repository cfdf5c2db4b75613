"""The training library: recipes (what is trained), data and the input paths, augmentation, the loop,
evaluation, models, optimizers and losses, processes, checkpoints and run folders.

It imports neither ``rsbkit.workbook`` nor ``rsbkit.explore`` (tests/test_layers.py checks it):
anything here can be used from a script without the notebook stack.

Importing it registers one exit handler, :func:`gc.freeze`, that runs after every handler registered
later (torch's, kaleido's, multiprocessing's): a process that imported torch, timm and plotly otherwise
spends 1 to 2 s of CPU in the interpreter's final garbage collections (measured on 2 cores: the train
notebook's kernel shut down in 2.9 s, and in 0.7 to 0.9 s with it; ``python -m rsbkit recipe a3`` 0.9 s
faster). Python does not promise to finalize objects still alive at exit, and rsbkit closes its files,
checkpoints and writers itself, so nothing relies on that collection. Papermill kernels, torchrun
workers, sweep points and the command line all exit through it."""
import atexit
import gc

__version__ = "0.1.0"

atexit.register(gc.freeze)
