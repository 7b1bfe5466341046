"""The pipeline's registration with transformers, so that `pipeline("multi-task-image-classification", ...)`
works once `mtl_hf` is imported."""

from __future__ import annotations

PIPELINE_TASK = "multi-task-image-classification"


def register_pipeline() -> None:
    """Registers `MultiTaskImageClassificationPipeline` under `PIPELINE_TASK` (again: a no-op)."""
    from transformers import AutoModel
    from transformers.pipelines import PIPELINE_REGISTRY

    from .pipeline import MultiTaskImageClassificationPipeline

    PIPELINE_REGISTRY.register_pipeline(
        PIPELINE_TASK, pipeline_class=MultiTaskImageClassificationPipeline, pt_model=AutoModel, type="image"
    )


__all__ = ["PIPELINE_TASK", "register_pipeline"]
