"""mtl_hf: fine-tune one vision transformer on several image tasks at once, the Hugging Face way.

`import mtl_hf` registers the model with transformers' Auto classes and the pipeline; everything else
(the trainer, the data path, the commands) is imported on first use, so that loading a model for
inference does not pay for the training stack.

    mtl_hf/
      models/mtl_vit/   the configuration and the model (the pair that travels as remote code)
      data/             task sources, the task mixture, decoding and transforms, the collator, built-in data
      balancing/        loss weightings, Gramian weightings and the gradient path they share
      training/         MultiTaskTrainingArguments, MultiTaskTrainer and the parts it orchestrates
      metrics/          per-task metrics (evaluate modules shipped in the package) and chance scores
      inference/        the multi-task image-classification pipeline
      hub/              the model card, its template and the training curves
      commands/         the `mtl-hf` command: train (the recipe), eval, predict, push, compare, prepare
      utils/            distributed helpers, the one host copy, output-folder locks, lazy imports, validation
"""

import os
import sys
from typing import TYPE_CHECKING

from .utils.lazy import lazy_attributes

__version__ = "0.2.0"

_ATTRIBUTES = {
    **dict.fromkeys(
        (
            "MISSING_CLASS",
            "POOLING_MODES",
            "TASK_TYPES",
            "MultiTaskOutput",
            "MultiTaskViTConfig",
            "MultiTaskViTModel",
            "MultiTaskViTPreTrainedModel",
            "TaskSpec",
        ),
        ".models.mtl_vit",
    ),
    "MultiTaskTrainer": ".training.trainer",
    "MultiTaskTrainingArguments": ".training.arguments",
    "MultiTaskImageClassificationPipeline": ".inference.pipeline",
    "PIPELINE_TASK": ".inference.registration",
    "UserError": ".errors",
}

if TYPE_CHECKING:
    from .errors import UserError
    from .inference.pipeline import MultiTaskImageClassificationPipeline
    from .inference.registration import PIPELINE_TASK
    from .models.mtl_vit import (
        MISSING_CLASS,
        POOLING_MODES,
        TASK_TYPES,
        MultiTaskOutput,
        MultiTaskViTConfig,
        MultiTaskViTModel,
        MultiTaskViTPreTrainedModel,
        TaskSpec,
    )
    from .training.arguments import MultiTaskTrainingArguments
    from .training.trainer import MultiTaskTrainer

__getattr__, __dir__ = lazy_attributes(__name__, _ATTRIBUTES)

_registered = False


def register_with_transformers() -> None:
    """Registers the model with transformers' Auto classes and the pipeline (again: a no-op). `import mtl_hf` does
    it, except in the `mtl-hf` command, which does it once its arguments are parsed (see below)."""
    global _registered
    if _registered:
        return
    from transformers import AutoConfig, AutoModel

    from .inference.registration import register_pipeline
    from .models.mtl_vit import MultiTaskViTConfig, MultiTaskViTModel

    # `exist_ok` keeps a model loaded as remote code first from failing.
    AutoConfig.register(MultiTaskViTConfig.model_type, MultiTaskViTConfig, exist_ok=True)
    AutoModel.register(MultiTaskViTConfig, MultiTaskViTModel, exist_ok=True)
    register_pipeline()
    _registered = True


# Registering imports torch and transformers' modeling code (about 2.5 s). The `mtl-hf` console script answers
# --help and one-line argument errors before it needs them, so there the command registers after parsing.
if os.path.basename((getattr(sys, "argv", None) or [""])[0]) != "mtl-hf":
    register_with_transformers()

__all__ = [
    "MISSING_CLASS",
    "PIPELINE_TASK",
    "POOLING_MODES",
    "TASK_TYPES",
    "MultiTaskImageClassificationPipeline",
    "MultiTaskOutput",
    "MultiTaskTrainer",
    "MultiTaskTrainingArguments",
    "MultiTaskViTConfig",
    "MultiTaskViTModel",
    "MultiTaskViTPreTrainedModel",
    "TaskSpec",
    "UserError",
    "register_with_transformers",
]
