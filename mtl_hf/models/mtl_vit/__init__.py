"""The multi-task vision transformer: the files that travel with every saved model as remote code (they import
only each other). Its names load on first use, so that a module needing one light file (the task types) does not
import torch."""

from typing import TYPE_CHECKING

from ...utils.lazy import lazy_attributes

_ATTRIBUTES = {
    "POOLING_MODES": ".configuration_mtl_vit",
    "TASK_TYPES": ".configuration_mtl_vit",
    "MultiTaskViTConfig": ".configuration_mtl_vit",
    "TaskSpec": ".configuration_mtl_vit",
    "MISSING_CLASS": ".heads_mtl_vit",
    "MultiTaskOutput": ".modeling_mtl_vit",
    "MultiTaskViTModel": ".modeling_mtl_vit",
    "MultiTaskViTPreTrainedModel": ".modeling_mtl_vit",
}

if TYPE_CHECKING:
    from .configuration_mtl_vit import POOLING_MODES, TASK_TYPES, MultiTaskViTConfig, TaskSpec
    from .heads_mtl_vit import MISSING_CLASS
    from .modeling_mtl_vit import MultiTaskOutput, MultiTaskViTModel, MultiTaskViTPreTrainedModel

__getattr__, __dir__ = lazy_attributes(__name__, _ATTRIBUTES)

__all__ = sorted(_ATTRIBUTES)
