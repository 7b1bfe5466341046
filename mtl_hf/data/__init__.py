"""Multi-task data: task sources, the task mixture, transforms, the collator, built-in datasets.

The data path runs one way:

    TaskSource(s) -> TaskMixture (which rows, per step, per rank) -> MultiTaskDataLoader
        -> MultiTaskCollator (decode + ImageTransforms + stack, in workers) -> batch for the model

Modules: `locations` (where rows come from), `encoding` (label columns -> tasks and targets), `streaming`,
`sources` (`TaskSource`), `selection` (held-out and first rows), `mixture` (the plan), `reader`, `loader`,
`images` (decoding), `transforms`, `collator`, `builtin/` (shop, digits). Names are imported on first use.
"""

from typing import TYPE_CHECKING

from ..utils.lazy import lazy_attributes

_ATTRIBUTES = {
    "BATCH_MODES": ".mixture",
    "STRATEGIES": ".mixture",
    "WHEN_EXHAUSTED": ".mixture",
    "ImageTransforms": ".transforms",
    "MixtureBatch": ".mixture",
    "MultiTaskCollator": ".collator",
    "MultiTaskDataLoader": ".loader",
    "RawExample": ".sources",
    "TaskMixture": ".mixture",
    "TaskSource": ".sources",
    "decode_image": ".images",
    "default_num_workers": ".loader",
    "load_digits_dataset": ".builtin.digits",
    "load_shop_dataset": ".builtin.shop",
    "shop_row": ".builtin.shop",
    "to_rgb": ".images",
    "write_shop_catalogue": ".builtin.shop",
    "write_shop_parquet": ".builtin.shop",
}

if TYPE_CHECKING:
    from .builtin.digits import load_digits_dataset
    from .builtin.shop import load_shop_dataset, shop_row, write_shop_catalogue, write_shop_parquet
    from .collator import MultiTaskCollator
    from .images import decode_image, to_rgb
    from .loader import MultiTaskDataLoader, default_num_workers
    from .mixture import BATCH_MODES, STRATEGIES, WHEN_EXHAUSTED, MixtureBatch, TaskMixture
    from .sources import RawExample, TaskSource
    from .transforms import ImageTransforms

__getattr__, __dir__ = lazy_attributes(__name__, _ATTRIBUTES)
__all__ = sorted(_ATTRIBUTES)
