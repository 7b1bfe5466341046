"""The gate on the old tasks of a model that new tasks were added to: before the new model is saved, both models score
the old tasks on the same held-out rows; each task's change of main score is printed, written into the card, and
held against `max_old_task_drop`.

The rows: `old_data` (its `old_split`), else the table the old model recorded training on, its `old_split`, the old
model's training rows left out (`commands/held_out.py`), so the scores are held-out scores for both models. The
scores are in each task's own units (accuracy, micro-F1, R^2): a drop of 0.02 is two points of accuracy.
"""

from __future__ import annotations

import json
import os

from ...errors import UserError
from ..evaluate import predicted_metrics
from ..held_out import HeldOutRows, held_out_rows, recorded_table


def old_task_rows(model_name: str, location: str, config, old_data: str | None, split: str, image_column: str):
    """The held-out rows the old tasks are scored on (`commands/held_out.py`), or None when there are none to find
    (no `old_data`, and no table of the old model's training that exists here)."""
    rows = held_out_rows(model_name, location, config, old_data, split, image_column if old_data else None)
    if rows is not None and rows.unscored:
        raise UserError(
            f"{old_data or recorded_table(config)} has no column for the old task(s) {rows.unscored}: their scores "
            "before and after could not be compared; give old_data with a column per old task"
        )
    return rows


def require_rows(rows: HeldOutRows | None, model_name: str, max_drop: float | None) -> None:
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


def gate_scores(original, model, processor, rows: HeldOutRows, batch_size: int) -> list[dict]:
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


def gate_table(scores: list[dict], rows: HeldOutRows) -> str:
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
    "failing_tasks",
    "gate_scores",
    "gate_table",
    "old_task_rows",
    "require_rows",
    "write_record",
]
