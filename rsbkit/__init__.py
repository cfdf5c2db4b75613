"""rsbkit: the training procedures of "ResNet strikes back" and ResNet-RS on timm, as a workbook."""
__version__ = "0.1.0"

from .errors import CheckpointError, DataError, NonFiniteLossError, RecipeError, RsbkitError, RunError  # noqa: E402
from .recipes import A1, A2, A3, TORCHVISION, Recipe, get_recipe, load_recipe, resnet_rs, smoke  # noqa: E402

__all__ = [
    "A1", "A2", "A3", "TORCHVISION", "Recipe", "get_recipe", "load_recipe", "resnet_rs", "smoke",
    "RsbkitError", "RecipeError", "DataError", "CheckpointError", "RunError", "NonFiniteLossError",
    "train", "load_data", "evaluate",
]


def __getattr__(name):  # the heavy modules load on first use
    if name == "train":
        from .train import train

        return train
    if name == "load_data":
        from .data import load_data

        return load_data
    if name == "evaluate":
        from .evaluate import evaluate

        return evaluate
    raise AttributeError(name)
