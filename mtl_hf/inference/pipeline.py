"""The `multi-task-image-classification` pipeline: its one implementation is the remote-code file that saved models
carry (`models/mtl_vit/pipeline_mtl_vit.py`); `mtl_hf` registers it with transformers (`registration.py`)."""

from ..models.mtl_vit.pipeline_mtl_vit import MultiTaskImageClassificationPipeline
from .registration import PIPELINE_TASK

__all__ = ["PIPELINE_TASK", "MultiTaskImageClassificationPipeline"]
