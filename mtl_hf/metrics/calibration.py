"""Calibration fitted on validation rows: a temperature per classification or multilabel task (Guo et al. 2017),
each multilabel label's decision threshold, and the expected calibration error that says what they bought.

- `fit_temperature`: the T that minimises the negative log-likelihood of softmax(logits / T) (cross-entropy) or
  sigmoid(logits / T) (binary cross-entropy over every known label), by L-BFGS on log T;
- `expected_calibration_error`: 15 equal-width confidence bins, |accuracy - confidence| weighted by the bins' rows
  (torchmetrics' `MulticlassCalibrationError` on the top label's confidence; `BinaryCalibrationError` on every
  known (row, label) score of a multilabel task);
- `best_thresholds`: per label, the cut that maximises F1 on the rows (or the lowest that reaches a target
  precision), placed halfway between the lowest score it accepts and the next score below it.

The config stores the result (`models/mtl_vit/calibration_mtl_vit.py`); `fitted_calibration` computes it for
every task the rows label.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import UserError
from ..models.mtl_vit.calibration_mtl_vit import DEFAULT_THRESHOLD
from ..models.mtl_vit.configuration_mtl_vit import TaskSpec
from ..models.mtl_vit.heads_mtl_vit import MISSING_CLASS
from .label_issues import labelled_rows
from .selective import answer_confidence, answer_right, review_curve

ECE_BINS = 15
MIN_ROWS = 20
"""Fewer labelled rows than this fit no temperature: the task is left uncalibrated and named."""
TEMPERATURE_RANGE = (0.05, 20.0)


def labelled(spec: TaskSpec, logits: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rows with a target (classification), or every known (row, label) pair flattened (multilabel)."""
    logits, targets = np.asarray(logits, np.float64), np.asarray(targets)
    if spec.type == "classification":
        known = targets != MISSING_CLASS
        return logits[known], targets[known].astype(np.int64)
    known = targets != MISSING_CLASS
    return logits[known], targets[known].astype(np.float64)


def fit_temperature(spec: TaskSpec, logits: np.ndarray, targets: np.ndarray) -> float:
    """The temperature minimising the negative log-likelihood of `targets` (see the module)."""
    values, truth = labelled(spec, logits, targets)
    values, truth = torch.from_numpy(values), torch.from_numpy(truth)
    log_temperature = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_temperature], lr=0.5, max_iter=200, line_search_fn="strong_wolfe")

    def loss():
        optimizer.zero_grad()
        scaled = values / log_temperature.exp()
        if spec.type == "classification":
            value = torch.nn.functional.cross_entropy(scaled, truth)
        else:
            value = torch.nn.functional.binary_cross_entropy_with_logits(scaled, truth)
        value.backward()
        return value

    optimizer.step(loss)
    return float(np.clip(log_temperature.exp().item(), *TEMPERATURE_RANGE))


def scores_at(spec: TaskSpec, logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """softmax (classification) or sigmoid (multilabel) of logits / temperature."""
    scaled = torch.from_numpy(np.asarray(logits, np.float64) / temperature)
    return (torch.softmax(scaled, -1) if spec.type == "classification" else torch.sigmoid(scaled)).numpy()


def expected_calibration_error(spec: TaskSpec, logits: np.ndarray, targets: np.ndarray, temperature: float = 1.0):
    """ECE over `ECE_BINS` bins of the labelled rows' scores at `temperature` (see the module)."""
    from torchmetrics.functional.classification import binary_calibration_error, multiclass_calibration_error

    values, truth = labelled(spec, logits, targets)
    scores = torch.from_numpy(scores_at(spec, values, temperature))
    if spec.type == "classification":
        error = multiclass_calibration_error(
            scores, torch.from_numpy(truth), num_classes=spec.num_outputs, n_bins=ECE_BINS, norm="l1"
        )
    else:
        error = binary_calibration_error(scores, torch.from_numpy(truth).long(), n_bins=ECE_BINS, norm="l1")
    return float(error)


def best_thresholds(
    scores: np.ndarray, targets: np.ndarray, labels: Sequence[str], target_precision: float | None = None
) -> tuple[dict[str, float], dict[str, str]]:
    """(label -> threshold, label -> why it has none) for a multilabel task's `scores` (rows, labels) and 0/1
    `targets` (MISSING_CLASS where unknown): see the module. A label without a positive row gets none, and so
    does one whose rows reach `target_precision` at no cut (the best precision it reaches is said)."""
    chosen, skipped = {}, {}
    for column, label in enumerate(labels):
        known = targets[:, column] != MISSING_CLASS
        score, truth = scores[known, column], targets[known, column] == 1
        if not truth.any():
            skipped[label] = "no positive row"
            continue
        order = np.argsort(-score, kind="stable")
        score, truth = score[order], truth[order]
        # The cuts: each distinct score, accepting every row at or above it (the last row of each run of equals).
        last = np.flatnonzero(np.append(score[1:] != score[:-1], True))
        true_positives = np.cumsum(truth)[last]
        accepted = last + 1
        precision = true_positives / accepted
        recall = true_positives / truth.sum()
        if target_precision is None:
            f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
            pick = int(np.argmax(f1))  # the first maximum: the highest cut among equal F1s
        else:
            reaching = np.flatnonzero(precision >= target_precision)
            if not len(reaching):
                skipped[label] = f"reaches precision {precision.max():.3f} at best, below {target_precision}"
                continue
            pick = int(reaching[-1])  # the lowest cut that reaches it: the most rows accepted
        below = score[last[pick] + 1] if last[pick] + 1 < len(score) else 0.0
        chosen[label] = float((score[last[pick]] + below) / 2)
    return chosen, skipped


@dataclass
class TaskCalibration:
    """One task's fit: its temperature, thresholds (multilabel), the rows, ECE before and after."""

    task: str
    rows: int
    temperature: float = 1.0
    ece_before: float = float("nan")
    ece_after: float = float("nan")
    thresholds: dict[str, float] = field(default_factory=dict)
    unthresholded: dict[str, str] = field(default_factory=dict)
    review: dict | None = None

    def entry(self, data: str) -> dict:
        """The config entry (`calibration_mtl_vit.py`)."""
        entry = {
            "temperature": round(self.temperature, 6),
            "rows": self.rows,
            "data": data,
            "ece": {"before": round(self.ece_before, 6), "after": round(self.ece_after, 6)},
        }
        if self.thresholds:
            entry["thresholds"] = {label: round(value, 6) for label, value in self.thresholds.items()}
        if self.review:
            entry["review"] = self.review
        return entry


def fitted_calibration(
    specs: Sequence[TaskSpec],
    logits: Mapping[str, np.ndarray],
    targets: Mapping[str, np.ndarray],
    *,
    thresholds: bool = True,
    target_precision: float | None = None,
) -> tuple[list[TaskCalibration], dict[str, str]]:
    """(each fitted task, task -> why it was not fitted) for the classification and multilabel tasks among `specs`
    that `logits` / `targets` hold."""
    if target_precision is not None and not 0.0 < target_precision < 1.0:
        raise UserError(f"a target precision is a share in (0, 1), got {target_precision}")
    fitted, left = [], {}
    for spec in specs:
        if spec.type == "regression" or spec.name not in logits:
            continue
        values, truth = np.asarray(logits[spec.name]), np.asarray(targets[spec.name])
        rows = len(labelled_rows(spec, truth))
        if rows < MIN_ROWS:
            left[spec.name] = f"{rows} labelled rows, fewer than the {MIN_ROWS} a fit needs"
            continue
        temperature = fit_temperature(spec, values, truth)
        before = expected_calibration_error(spec, values, truth)
        after = expected_calibration_error(spec, values, truth, temperature)
        if after > before:
            # The likelihood's best temperature can bin worse on few rows; a calibration that is worse on the very
            # rows it was fitted on is not one to answer with.
            left[spec.name] = (
                f"its fitted temperature {temperature:.2f} raised the ECE on these rows ({before:.4f} -> "
                f"{after:.4f}): it keeps T = 1"
            )
            temperature, after = 1.0, before
        task = TaskCalibration(spec.name, rows, temperature, before, after)
        scores = scores_at(spec, values, temperature)
        if spec.type == "multilabel" and thresholds:
            task.thresholds, task.unthresholded = best_thresholds(scores, truth, spec.labels, target_precision)
        cuts = [task.thresholds.get(label, DEFAULT_THRESHOLD) for label in spec.labels]
        task.review = review_curve(answer_confidence(spec, scores, cuts), answer_right(spec, scores, truth, cuts))
        fitted.append(task)
    return fitted, left


def calibration_table(fitted: Sequence[TaskCalibration], left: Mapping[str, str], where: str) -> str:
    """The fit as the commands print it: per task, its rows, temperature and ECE before and after."""
    lines = [
        f"\nCalibration on {where} ({ECE_BINS}-bin expected calibration error, lower is better):",
        f"{'task':<16} {'rows':>6} {'temperature':>11} {'ECE before':>10} {'ECE after':>9}",
    ]
    for task in fitted:
        lines.append(
            f"{task.task:<16} {task.rows:>6} {task.temperature:>11.3f} {task.ece_before:>10.4f} {task.ece_after:>9.4f}"
        )
        if task.thresholds:
            shown = ", ".join(f"{label} {value:.2f}" for label, value in task.thresholds.items())
            lines.append(f"  thresholds (best F1 on these rows; {DEFAULT_THRESHOLD} before): {shown}")
        for label, why in task.unthresholded.items():
            lines.append(f"  label {label!r} keeps threshold {DEFAULT_THRESHOLD}: {why}")
    for task, why in left.items():
        lines.append(f"{task:<16} not calibrated: {why}")
    return "\n".join(lines)


__all__ = [
    "ECE_BINS",
    "MIN_ROWS",
    "TaskCalibration",
    "best_thresholds",
    "calibration_table",
    "expected_calibration_error",
    "fit_temperature",
    "fitted_calibration",
    "scores_at",
]
