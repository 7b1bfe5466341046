"""Turning a batch of logits into answers, column by column: what `mtl-hf predict --output` writes per task.

- classification: `{task}` the best label, `{task}_scores` the `top_k` labels with their softmax scores;
- multilabel: `{task}` the labels whose sigmoid score reaches their threshold (best first), `{task}_scores` the
  `top_k` labels with their scores;
- regression: `{task}` the value (a list of values for a task with several outputs), in the targets' units;
- with review cuts (`--review_precision`): `{task}_needs_review` per task that has one (its answer's confidence,
  `metrics/selective.py`, below the cut), and `needs_review`, whether any of them is.

Scores are the calibrated ones where the model has a calibration (`config.calibration`: logits divided by the
task's temperature), and a multilabel label's threshold is, in this order: the task's threshold asked for
(`--threshold`), the label's calibrated one, 0.5.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pyarrow as pa

from ..errors import UserError
from ..metrics.selective import answer_confidence
from ..models.mtl_vit.answers_mtl_vit import photo_answer
from ..models.mtl_vit.calibration_mtl_vit import label_thresholds, task_temperature
from ..models.mtl_vit.configuration_mtl_vit import TaskSpec

SCORES = pa.list_(pa.struct([("label", pa.string()), ("score", pa.float32())]))


def answer_columns(
    specs: Sequence[TaskSpec],
    logits: Mapping[str, np.ndarray],
    *,
    top_k: int,
    thresholds: Mapping[str, float],
    calibration: Mapping[str, dict] | None = None,
    review_cuts: Mapping[str, float] | None = None,
) -> dict[str, pa.Array]:
    """Each task's answer columns (see the module) for the rows of `logits` (task -> `(rows, outputs)`)."""
    columns: dict[str, pa.Array] = {}
    review = None
    for spec in specs:
        values = np.asarray(logits[spec.name], dtype=np.float32)
        values = values[:, None] if values.ndim == 1 else values
        if spec.type == "regression":
            if values.shape[1] == 1:
                columns[spec.name] = pa.array(values[:, 0], type=pa.float32())
            else:
                columns[spec.name] = pa.array(list(values), type=pa.list_(pa.float32()))
            continue
        labels = np.asarray(spec.labels, dtype=object)
        values = values / task_temperature(calibration, spec.name)
        scores = _softmax(values) if spec.type == "classification" else 1.0 / (1.0 + np.exp(-values))
        order = np.argsort(-scores, axis=1, kind="stable")
        best = order[:, : min(top_k, scores.shape[1])]
        if spec.type == "classification":
            columns[spec.name] = pa.array(labels[order[:, 0]].tolist(), type=pa.string())
        else:
            cuts = np.asarray(
                [thresholds[spec.name]] * len(spec.labels)
                if spec.name in thresholds
                else label_thresholds(calibration, spec.name, spec.labels)
            )
            above = np.take_along_axis(scores >= cuts, order, axis=1)
            columns[spec.name] = pa.array(
                [labels[row[keep]].tolist() for row, keep in zip(order, above, strict=True)],
                type=pa.list_(pa.string()),
            )
        if spec.name in (review_cuts or {}):
            decided = cuts if spec.type == "multilabel" else None
            unsure = answer_confidence(spec, scores, decided) < review_cuts[spec.name]
            columns[f"{spec.name}_needs_review"] = pa.array(unsure, type=pa.bool_())
            review = unsure if review is None else review | unsure
        columns[f"{spec.name}_scores"] = pa.array(
            [
                [{"label": labels[i], "score": float(row_scores[i])} for i in row_best]
                for row_best, row_scores in zip(best, scores, strict=True)
            ],
            type=SCORES,
        )
    if review is not None:
        columns["needs_review"] = pa.array(review, type=pa.bool_())
    return columns


def answers_by_row(specs: Sequence[TaskSpec], columns: Mapping[str, pa.Array]) -> list[dict]:
    """`answer_columns` as one answer object per row (`models/mtl_vit/answers_mtl_vit.py`, the pipeline's): per
    task `{"label", "scores"}` (classification), `{"labels", "scores"}` (multilabel) or `{"value"}` (regression),
    each with `"needs_review"` where the task has a review cut, and the row's `"needs_review"` where any has."""
    rows = len(columns[specs[0].name]) if specs else 0
    answers: list[dict] = [{} for _ in range(rows)]
    for spec in specs:
        values = columns[spec.name].to_pylist()
        if spec.type == "regression":
            for answer, value in zip(answers, values, strict=True):
                answer[spec.name] = {"value": value}
            continue
        key = "label" if spec.type == "classification" else "labels"
        for answer, value, scores in zip(answers, values, columns[f"{spec.name}_scores"].to_pylist(), strict=True):
            answer[spec.name] = {key: value, "scores": scores}
        if f"{spec.name}_needs_review" in columns:
            for answer, unsure in zip(answers, columns[f"{spec.name}_needs_review"].to_pylist(), strict=True):
                answer[spec.name]["needs_review"] = unsure
    review = columns["needs_review"].to_pylist() if "needs_review" in columns else [None] * rows
    return [photo_answer(answer, unsure) for answer, unsure in zip(answers, review, strict=True)]


def answer_from_row(specs: Sequence[TaskSpec], row: Mapping) -> dict:
    """One row of `predict --output`'s Parquet shards (as `pyarrow` or `pandas` give it, a dict of columns) as
    the answer object every other client gets (`answers_by_row`)."""
    table = pa.table({name: [row[name]] for name in row if name in _answer_names(specs)})
    return answers_by_row(specs, {name: table.column(name).combine_chunks() for name in table.column_names})[0]


def _answer_names(specs: Sequence[TaskSpec]) -> set[str]:
    names = {"needs_review"}
    for spec in specs:
        names |= {spec.name, f"{spec.name}_scores", f"{spec.name}_needs_review"}
    return names


def thresholds_by_task(
    every_task: float | None, per_task: Mapping[str, float], specs: Sequence[TaskSpec]
) -> dict[str, float]:
    """Per multilabel task, its threshold: `per_task`'s where it names one, else `every_task` (when given),
    checked (`check_thresholds`)."""
    everywhere = {} if every_task is None else {s.name: every_task for s in specs if s.type == "multilabel"}
    return check_thresholds({**everywhere, **per_task}, specs)


def check_thresholds(thresholds: Mapping[str, float], specs: Sequence[TaskSpec]) -> dict[str, float]:
    """Per-task multilabel thresholds, checked: known multilabel tasks, values in [0, 1]."""
    multilabel = [spec.name for spec in specs if spec.type == "multilabel"]
    for task, value in thresholds.items():
        if task not in multilabel:
            raise UserError(
                f"--threshold {task}={value}: {task!r} is not a multilabel task of this model; its multilabel "
                f"tasks are {multilabel}"
            )
        if not 0.0 <= value <= 1.0:
            raise UserError(f"--threshold {task}={value}: a threshold is a score in [0, 1]")
    return dict(thresholds)


def _softmax(values: np.ndarray) -> np.ndarray:
    shifted = np.exp(values - values.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


__all__ = ["answer_columns", "answer_from_row", "answers_by_row", "check_thresholds", "thresholds_by_task"]
