"""How far a cheaper engine's answers (an int8 graph, a bf16 forward) are from the full-precision model's, task by
task, on the same photos: what the precision gate (`inference/precision_gate.py`) holds against its limits.

- classification: the share of photos whose best label is the same;
- multilabel: per label, the share of photos whose decision (score at the label's threshold) is the same; the task
  is as good as its worst label, which is named;
- regression: the largest error over the photos, as a share of the spread (standard deviation) of the reference
  answers over them, so that a task in centimetres and one in kilograms are held to one limit;
- where the model is calibrated and the photos are labelled: the calibration error (ECE) of each engine's scores,
  so that a change of confidence that leaves every answer in place is seen too.

Scores and decisions are the model's own: its calibrated temperature, and each label's calibrated threshold (or the
threshold asked for the task).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..models.mtl_vit.calibration_mtl_vit import label_thresholds, task_temperature

if TYPE_CHECKING:
    from ..models.mtl_vit.configuration_mtl_vit import TaskSpec


@dataclass(frozen=True)
class GateLimits:
    """What a cheaper engine must keep of the full-precision answers, per task.

    Args:
        min_agreement: the least share of identical answers: best labels (classification), each label's decision
            (multilabel).
        max_regression_error: the largest error a regression answer may have, as a share of the spread of the
            reference answers (their standard deviation over the gate's photos).
        max_ece_increase: the most the calibration error may rise (absolute), where it is measured.
    """

    min_agreement: float = 0.99
    max_regression_error: float = 0.05
    max_ece_increase: float = 0.01


@dataclass(frozen=True)
class TaskAgreement:
    """One task's agreement between the reference engine and the candidate (see the module)."""

    task: str
    type: str
    value: float  # agreement share (classification, multilabel: the worst label) or relative error (regression)
    worst_label: str | None = None
    ece_reference: float | None = None
    ece_candidate: float | None = None

    @property
    def measure(self) -> str:
        return {
            "classification": "top-1 agreement",
            "multilabel": "decision agreement (worst label)",
            "regression": "largest error / spread",
        }[self.type]

    def failure(self, limits: GateLimits) -> str | None:
        """Why this task fails `limits`, or None."""
        if self.type == "regression":
            if not self.value <= limits.max_regression_error:
                return f"largest error {self.value:.3g} of its spread > {limits.max_regression_error:g}"
        elif not self.value >= limits.min_agreement:
            where = f" (label {self.worst_label!r})" if self.worst_label else ""
            return f"{self.measure} {self.value:.4f}{where} < {limits.min_agreement:g}"
        if self.ece_reference is not None and not self.ece_candidate - self.ece_reference <= limits.max_ece_increase:
            return (
                f"calibration error {self.ece_reference:.4f} -> {self.ece_candidate:.4f}, up more than "
                f"{limits.max_ece_increase:g}"
            )
        return None

    def record(self) -> dict:
        """This task's figures as JSON (the gate's record kept beside an engine it let through)."""
        return {
            "task": self.task,
            "measure": self.measure,
            "value": self.value,
            **({"worst_label": self.worst_label} if self.worst_label else {}),
            **(
                {"ece": {"full_precision": self.ece_reference, "this_engine": self.ece_candidate}}
                if self.ece_reference is not None
                else {}
            ),
        }

    def summary(self) -> str:
        if self.type == "regression":
            text = f"{self.task} error {self.value:.3g} of spread"
        else:
            text = f"{self.task} {self.value:.4f}" + (f" ({self.worst_label})" if self.worst_label else "")
        if self.ece_reference is not None:
            text += f", ECE {self.ece_reference:.4f} -> {self.ece_candidate:.4f}"
        return text


def engine_agreement(
    specs: Sequence[TaskSpec],
    reference: Mapping[str, np.ndarray],
    candidate: Mapping[str, np.ndarray],
    *,
    calibration: Mapping[str, dict] | None = None,
    thresholds: Mapping[str, float] | None = None,
    targets: Mapping[str, np.ndarray] | None = None,
) -> list[TaskAgreement]:
    """Each task's `TaskAgreement` between `reference` and `candidate` logits (task -> (rows, outputs)) for the
    same rows; `targets` (task -> the rows' encoded labels) adds the calibration errors of calibrated tasks."""
    from .calibration import scores_at  # torch: not imported where the gate's options are only parsed

    measured = []
    for spec in specs:
        ours, theirs = np.asarray(reference[spec.name], np.float64), np.asarray(candidate[spec.name], np.float64)
        if ours.shape != theirs.shape:
            raise ValueError(f"task {spec.name!r}: reference logits {ours.shape}, candidate {theirs.shape}")
        worst = None
        if spec.type == "classification":
            value = float(np.mean(ours.argmax(-1) == theirs.argmax(-1))) if len(ours) else 1.0
        elif spec.type == "multilabel":
            temperature = task_temperature(calibration, spec.name)
            cuts = np.asarray(
                [thresholds[spec.name]] * len(spec.labels)
                if spec.name in (thresholds or {})
                else label_thresholds(calibration, spec.name, spec.labels)
            )
            same = (scores_at(spec, ours, temperature) >= cuts) == (scores_at(spec, theirs, temperature) >= cuts)
            per_label = same.mean(0) if len(same) else np.ones(len(spec.labels))
            value, worst = float(per_label.min()), spec.labels[int(per_label.argmin())]
        else:
            ours, theirs = ours.reshape(len(ours), -1), theirs.reshape(len(theirs), -1)
            spread = np.maximum(ours.std(0), 1e-12) if len(ours) else np.ones(ours.shape[1])
            value = float((np.abs(theirs - ours) / spread).max()) if len(ours) else 0.0
        eces = _calibration_errors(spec, ours, theirs, calibration, targets)
        measured.append(TaskAgreement(spec.name, spec.type, value, worst, *eces))
    return measured


def _calibration_errors(spec, ours, theirs, calibration, targets) -> tuple[float | None, float | None]:
    """(reference ECE, candidate ECE) for a calibrated task with labelled rows, else (None, None)."""
    from .calibration import expected_calibration_error, labelled

    if spec.type == "regression" or spec.name not in (calibration or {}) or spec.name not in (targets or {}):
        return None, None
    if len(labelled(spec, ours, targets[spec.name])[0]) == 0:
        return None, None
    temperature = task_temperature(calibration, spec.name)
    return tuple(expected_calibration_error(spec, values, targets[spec.name], temperature) for values in (ours, theirs))


__all__ = ["GateLimits", "TaskAgreement", "engine_agreement"]
