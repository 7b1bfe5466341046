"""Scores from logits: one task's metrics as evaluation reports them, and the chance score of each task (a
constant answer that ignores the image), so that a reader can tell learning from guessing."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from ..models.mtl_vit.configuration_mtl_vit import TaskSpec
from . import PRIMARY_METRIC, load_task_metric


def task_metrics(spec: TaskSpec, logits: np.ndarray, targets: np.ndarray, multilabel_threshold: float = 0.5):
    """One task's metrics (its metric module's keys) from its logits and targets; missing targets are skipped."""
    metric = load_task_metric(spec.type)
    if spec.type == "classification":
        return metric.compute(predictions=logits.argmax(-1), references=targets, num_labels=spec.num_outputs)
    if spec.type == "multilabel":
        probabilities = 1.0 / (1.0 + np.exp(-logits))
        return metric.compute(predictions=probabilities, references=targets, threshold=multilabel_threshold)
    return metric.compute(predictions=logits, references=targets)


CHANCE_MARGIN = 0.01
"""A main score within this of its chance score (or below it) is at chance: the model learnt nothing there."""


def at_or_below_chance(score: float, chance: float, *, lower_is_better: bool = False) -> bool:
    """Whether a score is no better than its chance score, by more than `CHANCE_MARGIN` (the main scores,
    accuracy, micro-F1 and R^2, are higher-is-better, on a 0-1 scale: the margin is absolute; an error such as MAE
    is `lower_is_better`, in the targets' units: the margin is that share of the chance error)."""
    if lower_is_better:
        return chance - score <= CHANCE_MARGIN * abs(chance)
    return score - chance <= CHANCE_MARGIN


def chance_scores(
    task_specs: Mapping[str, TaskSpec],
    targets: Mapping[str, np.ndarray],
    multilabel_threshold: float = 0.5,
    prefix: str = "eval",
    metrics: Mapping[str, str] | None = None,
) -> dict[str, float]:
    """Each task's main score (`{prefix}_{task}_{metric}`; `metrics` names another per task type) for a constant
    answer that ignores the image.

    Classification: the evaluation data's most frequent class; multilabel: every label "yes";
    regression: the evaluation targets' mean (R^2 = 0). The first two are read off the evaluation
    labels themselves, so they are, if anything, generous to the baseline.
    """
    scores = {}
    for name, target in targets.items():
        spec = task_specs[name]
        if spec.type == "classification":
            present = target[target >= 0].astype(int)
            majority = np.bincount(present, minlength=spec.num_outputs).argmax() if present.size else 0
            logits = np.zeros((len(target), spec.num_outputs))
            logits[:, majority] = 1.0
        elif spec.type == "multilabel":
            logits = np.full(target.shape, 10.0)
        else:
            logits = np.broadcast_to(np.nanmean(target, axis=0), target.shape).copy()
        metric = (metrics or PRIMARY_METRIC)[spec.type]
        scores[f"{prefix}_{name}_{metric}"] = task_metrics(spec, logits, target, multilabel_threshold)[metric]
    return scores


RELATIVE_SCORE_FLOOR = -1.0
"""The lowest relative score a task can pull the mean down to: as far below chance as perfect is above it."""


def relative_score(score: float, chance: float) -> float:
    """A main score on a scale shared by every task type: 0 for the chance answer (`chance_scores`), 1 for a
    perfect one, floored at `RELATIVE_SCORE_FLOOR` (R^2 is unbounded below); NaN where the task has no score or
    the chance answer is already perfect (every evaluated row has the same label)."""
    if math.isnan(score) or math.isnan(chance) or chance >= 1.0:
        return math.nan
    return max((score - chance) / (1.0 - chance), RELATIVE_SCORE_FLOOR)


__all__ = [
    "CHANCE_MARGIN",
    "RELATIVE_SCORE_FLOOR",
    "at_or_below_chance",
    "chance_scores",
    "relative_score",
    "task_metrics",
]
