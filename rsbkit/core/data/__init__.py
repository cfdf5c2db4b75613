"""Data for training, in four parts: datasets by name (``datasets``: the embedded subset, Fashion-MNIST,
ImageNet-layout folders, timm's datasets), the epoch's order and per-sample seeds (``sampling``), the
training input (``train_input``) and the validation input (``eval_input``). Every public name is here:
``from rsbkit.core.data import load_data``."""
from .datasets import (  # noqa: F401
    DEBIAN_FASHION_MNIST,
    DEFAULT_NAMES,
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_NAMES,
    HELP,
    IMAGE_EXTENSIONS,
    TIMM_PREFIXES,
    VAL_SPLITS,
    ArrayImages,
    Data,
    ImageFiles,
    SkippedImage,
    Transformed,
    class_folders,
    collate,
    fixed_subset,
    load_data,
    read_idx,
)
from .eval_input import EvalInput, eval_loader, eval_shard, eval_transform  # noqa: F401
from .sampling import EpochSampler, StepSampler, epoch_images, epoch_order, sample_seed, sample_seeds  # noqa: F401
from .train_input import (  # noqa: F401
    ArrayBatches,
    EncodedBatch,
    EncodedFiles,
    InputPathError,
    SeededTransform,
    TrainInput,
    ahead,
    ahead_parallel,
    batch_bytes,
    collate_encoded,
    create_mixup,
    decode_batch,
    eval_kind,
    files_of,
    in_flight_note,
    input_kind,
    mix,
    side_stream,
    train_transform,
)
