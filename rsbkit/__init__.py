"""rsbkit: the training procedures of "ResNet strikes back" and ResNet-RS on timm, as a workbook.

The loop, data and evaluation live in their modules (``from rsbkit.train import train``);
they are not re-exported here because their names are also the module names.
"""
__version__ = "0.1.0"

from .errors import CheckpointError, DataError, NonFiniteLossError, RecipeError, RsbkitError, RunError  # noqa: E402
from .recipes import A1, A2, A3, TORCHVISION, Recipe, get_recipe, load_recipe, resnet_rs, smoke  # noqa: E402

__all__ = [
    "A1", "A2", "A3", "TORCHVISION", "Recipe", "get_recipe", "load_recipe", "resnet_rs", "smoke",
    "RsbkitError", "RecipeError", "DataError", "CheckpointError", "RunError", "NonFiniteLossError",
]
