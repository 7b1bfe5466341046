"""The gate on the old tasks of a model that new tasks were added to: before the new model is saved, both models score
the old tasks on the same held-out rows; each task's change of main score is printed, written into the card, and
held against `max_old_task_drop`.

The rows: `old_data` (its `old_split`), else the table the old model recorded training on (config.training_data),
its `old_split`. Rows the old model trained on are left out, recognised by their hashed keys, so the scores are
held-out scores for both models. The scores are in each task's own units (accuracy, micro-F1, R^2): a drop of 0.02
is two points of accuracy.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass

from ...errors import UserError
from ..evaluate import predicted_metrics, scored_source, without_training_rows


@dataclass
class OldTaskRows:
    source: object  # a TaskSource of the old tasks' columns, training rows left out
    description: str
    left_out: int


def old_task_rows(model_name: str, location: str, config, old_data: str | None, split: str, image_column: str):
    """The held-out rows the old tasks are scored on, or None when there are none to find (no `old_data`, and no
    table of the old model's training that exists here)."""
    data = old_data or _recorded_table(config)
    if data is None:
        return None
    args = argparse.Namespace(
        model=model_name,
        data=data,
        split=split,
        tasks=None,
        image_column=image_column,
        id_column=None,
        max_rows=None,
        bad_image_policy="skip",
        allow_training_rows=False,
        skip_training_rows=True,
    )
    source, rows, unscored = scored_source(args, config)
    if unscored:
        raise UserError(
            f"{data} has no column for the old task(s) {unscored}: their scores before and after could not be "
            "compared; give old_data with a column per old task"
        )
    source, _, left_out = without_training_rows(args, config, location, source, rows)
    return OldTaskRows(source, f"split {split!r} of {data}", left_out)


def _recorded_table(config) -> str | None:
    for entry in config.training_data or ():
        if entry.get("split_by") and os.path.exists(entry.get("data", "")):
            return entry["data"]
    return None


def require_rows(rows: OldTaskRows | None, model_name: str, max_drop: float | None) -> None:
    """A gate that was asked for needs rows; without a gate, a missing score is said, not hidden."""
    if rows is not None:
        return
    if max_drop is not None:
        raise UserError(
            f"max_old_task_drop needs held-out rows of {model_name}'s tasks, and it records no table of its training "
            "that exists here: give old_data (a table with a column per old task)"
        )
    print(
        f"note: {model_name}'s old tasks will not be scored before and after (no record of its data here, no "
        "old_data): how far their answers moved is not measured"
    )


def gate_scores(original, model, processor, rows: OldTaskRows, batch_size: int) -> list[dict]:
    """Each old task's main score from the model as it was and as it is now, on the same rows."""
    from ...metrics import PRIMARY_METRIC

    before, _ = predicted_metrics(original, processor, rows.source, batch_size)
    after, _ = predicted_metrics(model, processor, rows.source, batch_size)
    scores = []
    for spec in original.config.task_specs:
        key = f"eval_{spec.name}_{PRIMARY_METRIC[spec.type]}"
        if key in before:
            metric = PRIMARY_METRIC[spec.type]
            scores.append({"task": spec.name, "metric": metric, "before": before[key], "after": after[key]})
    return scores


def failing_tasks(scores: list[dict], max_drop: float | None) -> list[dict]:
    return [row for row in scores if max_drop is not None and row["before"] - row["after"] > max_drop]


def gate_table(scores: list[dict], rows: OldTaskRows) -> str:
    lines = [f"\nold tasks on {rows.source.num_rows} held-out rows ({rows.description}):"]
    lines.append(f"{'task':<14} {'metric':<9} {'before':>8} {'after':>8} {'change':>8}")
    for row in scores:
        change = row["after"] - row["before"]
        lines.append(f"{row['task']:<14} {row['metric']:<9} {row['before']:>8.4f} {row['after']:>8.4f} {change:>+8.4f}")
    return "\n".join(lines)


def write_record(folder: str, record: dict) -> None:
    from ...training.model_card import ADDED_TASKS_FILE

    with open(os.path.join(folder, ADDED_TASKS_FILE), "w") as file:
        json.dump(record, file, indent=2)


__all__ = [
    "OldTaskRows",
    "failing_tasks",
    "gate_scores",
    "gate_table",
    "old_task_rows",
    "require_rows",
    "write_record",
]
