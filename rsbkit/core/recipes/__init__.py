"""Training recipes as data, in four parts: the schema and its checks (``schema``), the named recipes
with their provenance (``catalogue``), the batch plan (``batch``), and YAML files and views (``files``).
Every public name is here: ``from rsbkit.core.recipes import A3, plan_batch``."""
from .batch import BatchLR, BatchPlan, batch_lr, lr_scaling, plan_batch, split_batch  # noqa: F401
from .catalogue import A1, A2, A3, RECIPES, RESNET_RS_TABLE, TORCHVISION, get_recipe, resnet_rs, smoke  # noqa: F401
from .files import base_recipe, changes, compare, load_recipe, parse_overrides, recipe_from_yaml  # noqa: F401
from .schema import (  # noqa: F401
    AMP_DTYPES,
    AUGMENT_ON,
    DECODE_ON,
    DIST_BN,
    EVAL_ON,
    EXECUTION_FIELDS,
    INTERPOLATIONS,
    LOSSES,
    LR_SCALES,
    SCHEDULES,
    Recipe,
    Reported,
    did_you_mean,
    recipe_fields,
    split_fields,
)
from .timm_args import closest_base, from_timm_args, params_yaml, timm_command, to_timm_args  # noqa: F401
