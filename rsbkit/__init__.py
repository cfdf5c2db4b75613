"""rsbkit: the training procedures of "ResNet strikes back" and ResNet-RS on timm, as a workbook.

Three layers, each a folder; imports point down:

- ``rsbkit.core``: the training library (recipes, data and input paths, augmentation, the loop,
  evaluation, models, processes, run folders). It imports neither of the others.
- ``rsbkit.workbook``: what notebooks, sweeps, studies and the command line call.
- ``rsbkit.explore``: the teaching explorers behind the widget notebooks (core only).

The names most used from notebooks and scripts are here too: ``from rsbkit import A3, train``.
"""
from .core import __version__
from .core.data import load_data
from .core.errors import CheckpointError, DataError, NonFiniteLossError, RecipeError, RsbkitError, RunError
from .core.recipes import A1, A2, A3, TORCHVISION, Recipe, get_recipe, load_recipe, resnet_rs, smoke
from .core.runs import load_run
from .core.train import train

__all__ = [
    "__version__", "A1", "A2", "A3", "TORCHVISION", "Recipe", "get_recipe", "load_recipe", "resnet_rs", "smoke",
    "train", "load_data", "load_run",
    "RsbkitError", "RecipeError", "DataError", "CheckpointError", "RunError", "NonFiniteLossError",
]
