"""A model's calibration kept true to its answers: fitted on labelled rows it did not train on (at the end of
training, or by `mtl-hf calibrate`), and dropped where training moved a task's answers and no rows refit it.

A task's entry (temperature, thresholds) describes the logits of the weights it was fitted on. Training further
changes them unless nothing on the task's path trained (its head, the backbone, and the task adapter when it reads
through one): `heads` and `lora` modes of `mtl-hf add-task` leave the old tasks so, and keep their entries.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ..metrics.calibration import TaskCalibration, fitted_calibration


def answers_may_have_changed(model, task: str) -> bool:
    """Whether a parameter on `task`'s path is trainable (its head, the backbone, its task adapter)."""
    path = [model.heads[task], model.backbone]
    adapter = getattr(model, "task_adapter", None)
    if adapter is not None and task in adapter.tasks:
        path.append(adapter)
    return any(parameter.requires_grad for module in path for parameter in module.parameters())


def drop_stale_calibration(model) -> list[str]:
    """Drops the entries of the tasks whose answers training may have moved; returns their names."""
    calibration = model.config.calibration or {}
    stale = [task for task in calibration if answers_may_have_changed(model, task)]
    kept = {task: entry for task, entry in calibration.items() if task not in stale}
    model.config.calibration = kept or None
    return stale


def update_calibration(
    model,
    logits: Mapping[str, np.ndarray],
    targets: Mapping[str, np.ndarray],
    data: str,
    *,
    thresholds: bool = True,
    target_precision: float | None = None,
) -> tuple[list[TaskCalibration], dict[str, str]]:
    """Fits every classification / multilabel task that `targets` label (see `fitted_calibration`) and stores it
    in `model.config.calibration`, the other tasks' entries kept; returns (fitted, task -> why not fitted)."""
    fitted, left = fitted_calibration(
        model.config.task_specs, logits, targets, thresholds=thresholds, target_precision=target_precision
    )
    for spec in model.config.task_specs:
        if spec.type != "regression" and spec.name not in logits and spec.name not in left:
            kept = spec.name in (model.config.calibration or {})
            left[spec.name] = "no labels in these rows" + ("; its calibration from before is kept" if kept else "")
    entries = {**(model.config.calibration or {}), **{task.task: task.entry(data) for task in fitted}}
    model.config.calibration = entries or None
    return fitted, left


__all__ = ["answers_may_have_changed", "drop_stale_calibration", "update_calibration"]
