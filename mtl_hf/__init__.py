"""mtl_hf: fine-tune one vision transformer on several image tasks at once, the Hugging Face way."""

from transformers import AutoConfig, AutoModel
from transformers.pipelines import PIPELINE_REGISTRY

from .inference.pipeline import PIPELINE_TASK, MultiTaskImageClassificationPipeline
from .models.mtl_vit.configuration_mtl_vit import POOLING_MODES, TASK_TYPES, MultiTaskViTConfig, TaskSpec
from .models.mtl_vit.modeling_mtl_vit import (
    MISSING_CLASS,
    MultiTaskOutput,
    MultiTaskViTModel,
    MultiTaskViTPreTrainedModel,
)
from .training.arguments import MultiTaskTrainingArguments
from .training.trainer import MultiTaskTrainer

__version__ = "0.1.0"

# `exist_ok` keeps a second import (or a model loaded as remote code first) from failing.
AutoConfig.register(MultiTaskViTConfig.model_type, MultiTaskViTConfig, exist_ok=True)
AutoModel.register(MultiTaskViTConfig, MultiTaskViTModel, exist_ok=True)
PIPELINE_REGISTRY.register_pipeline(
    PIPELINE_TASK, pipeline_class=MultiTaskImageClassificationPipeline, pt_model=AutoModel, type="image"
)

__all__ = [
    "MISSING_CLASS",
    "PIPELINE_TASK",
    "MultiTaskImageClassificationPipeline",
    "POOLING_MODES",
    "TASK_TYPES",
    "MultiTaskOutput",
    "MultiTaskTrainer",
    "MultiTaskTrainingArguments",
    "MultiTaskViTConfig",
    "MultiTaskViTModel",
    "MultiTaskViTPreTrainedModel",
    "TaskSpec",
]
