"""The multi-task vision transformer: its configuration and its model, the pair of files that travels with
every saved model as remote code (they import only each other)."""

from .configuration_mtl_vit import POOLING_MODES, TASK_TYPES, MultiTaskViTConfig, TaskSpec
from .heads_mtl_vit import MISSING_CLASS
from .modeling_mtl_vit import MultiTaskOutput, MultiTaskViTModel, MultiTaskViTPreTrainedModel

__all__ = [
    "MISSING_CLASS",
    "POOLING_MODES",
    "TASK_TYPES",
    "MultiTaskOutput",
    "MultiTaskViTConfig",
    "MultiTaskViTModel",
    "MultiTaskViTPreTrainedModel",
    "TaskSpec",
]
