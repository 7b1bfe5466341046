"""Inference: the `multi-task-image-classification` pipeline and its registration with transformers."""
