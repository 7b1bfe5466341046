"""Multi-task data: task sources, the task mixture, transforms, the collator, embedded datasets.

The data path runs one way:

    TaskSource(s) -> TaskMixture (which rows, per step, per rank) -> MultiTaskDataLoader
        -> MultiTaskCollator (decode + ImageTransforms + stack, in workers) -> batch for the model
"""

from .builtin.digits import load_digits_dataset
from .builtin.shop import load_shop_dataset, shop_row, write_shop_catalogue, write_shop_parquet
from .collator import MultiTaskCollator
from .mixture import (
    BATCH_MODES,
    STRATEGIES,
    WHEN_EXHAUSTED,
    MixtureBatch,
    MultiTaskDataLoader,
    TaskMixture,
    default_num_workers,
)
from .sources import RawExample, TaskSource
from .transforms import ImageTransforms, decode_image, to_rgb

__all__ = [
    "BATCH_MODES",
    "STRATEGIES",
    "WHEN_EXHAUSTED",
    "ImageTransforms",
    "MixtureBatch",
    "MultiTaskCollator",
    "MultiTaskDataLoader",
    "RawExample",
    "TaskMixture",
    "TaskSource",
    "decode_image",
    "default_num_workers",
    "load_digits_dataset",
    "load_shop_dataset",
    "shop_row",
    "to_rgb",
    "write_shop_catalogue",
    "write_shop_parquet",
]
