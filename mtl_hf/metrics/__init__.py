"""Per-task metrics as `evaluate` modules shipped inside the package (loaded by path, offline)."""

from functools import cache
from pathlib import Path

METRICS_DIR = Path(__file__).resolve().parent
METRIC_MODULES = {
    "classification": METRICS_DIR / "mtl_classification",
    "multilabel": METRICS_DIR / "mtl_multilabel",
    "regression": METRICS_DIR / "mtl_regression",
}
PRIMARY_METRIC = {"classification": "accuracy", "multilabel": "micro_f1", "regression": "r2"}
"""The score each task type contributes to the average over tasks (higher is better for all three)."""
TASK_METRICS = {
    "classification": ("accuracy", "macro_f1"),
    "multilabel": ("micro_f1", "macro_f1", "mAP"),
    "regression": ("r2", "mse", "mae"),
}
"""The metrics each task type reports (its metric module's keys, less `count`)."""


@cache
def load_task_metric(task_type: str):
    """The `evaluate` module for a task type, loaded from the package's own files."""
    import evaluate

    if task_type not in METRIC_MODULES:
        raise ValueError(f"no metric for task type {task_type!r}; types are {sorted(METRIC_MODULES)}")
    return evaluate.load(str(METRIC_MODULES[task_type]))


__all__ = ["METRIC_MODULES", "PRIMARY_METRIC", "TASK_METRICS", "load_task_metric"]
