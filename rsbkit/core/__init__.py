"""The training library: recipes (what is trained), data and the input paths, augmentation, the loop,
evaluation, models, optimizers and losses, processes, checkpoints and run folders.

It imports neither ``rsbkit.workbook`` nor ``rsbkit.explore`` (tests/test_layers.py checks it):
anything here can be used from a script without the notebook stack. Importing it changes nothing in
the importing process (no exit handler, no global setting)."""

__version__ = "0.1.0"
