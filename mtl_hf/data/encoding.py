"""From a label column to a task: its spec (type and labels read from the column where they can be) and the
encoder that turns each cell into the model's target conventions (a class id or -100, a multi-hot vector or
-100, floats or NaN).

Labels are matched by name: data whose labels are a subset of the task's (a week without purple products)
encodes with the task's ids. A label the task does not know is an error when training; when evaluating, the
row is left out of that task's scores and counted (`unknown_labels`), never dropped silently.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from datasets import IterableDataset

from ..errors import UserError
from ..models.mtl_vit.heads_mtl_vit import MISSING_CLASS
from ..models.mtl_vit.tasks_mtl_vit import TaskSpec
from ..utils.validation import check_choice, closest
from .columns import as_name, cell_names, distinct_names, read_feature, regression_statistics

SPEC_OPTIONS = {f.name for f in fields(TaskSpec)} - {"name"}
CELL_OPTIONS = {"column", "empty"}
EMPTY_MEANINGS = ("none", "missing")
"""What an empty multilabel cell of a catalogue table means: none of the labels (a product without badges), or
an unknown value. A null in a format that tells null from empty (JSON, Parquet lists) stays missing."""
UNKNOWN_LABELS = ("error", "count")


def normalise_tasks(tasks: Any) -> dict[str, dict[str, Any]]:
    """`tasks` as given to a source (a column, a list of columns, or a mapping task -> column or -> options)
    as `{task: {"column": ..., **TaskSpec fields, "empty": ...}}`."""
    if isinstance(tasks, str):
        tasks = [tasks]
    if isinstance(tasks, Mapping):
        items = tasks.items()
    elif isinstance(tasks, Sequence):
        bad = [column for column in tasks if not isinstance(column, str)]
        if bad:
            raise UserError(f"a list of tasks holds label column names, got {bad[0]!r}; use a mapping for options")
        items = [(column, column) for column in tasks]
    else:
        raise UserError(
            f"tasks must be a list of label columns or a mapping task -> column, got {type(tasks).__name__}"
        )
    normalised = {}
    known = sorted(SPEC_OPTIONS | CELL_OPTIONS)
    for task, options in items:
        options = {"column": options} if isinstance(options, str) else dict(options)
        options.setdefault("column", task)
        unknown = sorted(set(options) - set(known))
        if unknown:
            hints = [f"{key} (did you mean {close}?)" for key in unknown if (close := closest(key, known))]
            hint = f" - {', '.join(hints)}" if hints else ""
            raise UserError(f"task {task!r}: unknown options {unknown}{hint}; its options are {known}")
        normalised[task] = options
    if not normalised:
        raise UserError("a source needs at least one task (a label column)")
    return normalised


def task_options(spec: TaskSpec, column: str) -> dict[str, Any]:
    """A `tasks` entry that reads `column` as `spec` says (labels included), e.g. for another split."""
    options = {key: value for key, value in spec.to_dict().items() if key != "name"}
    if spec.type != "regression":
        options.pop("num_outputs")  # follows from the labels
    return {"column": column, **options}


@dataclass(frozen=True)
class CellRules:
    """How a source's cells read: a multilabel text cell's `separator`, and whether an empty cell is read as a
    null (CSV), so that a null multilabel cell is an empty one."""

    separator: str | None = None
    nulls_are_empty: bool = False
    unknown_labels: str = "error"


@dataclass
class TaskEncoder:
    """Turns one column's values into the model's target conventions for one task."""

    spec: TaskSpec
    cells_are_ids: bool = False
    id_names: list[str] | None = None  # the names the cells' ids stand for, where not the spec's labels
    empty: str = "none"
    rules: CellRules = field(default_factory=CellRules)
    unknown: Counter = field(default_factory=Counter)  # label name -> cells left out (rules.unknown_labels "count")
    rows_left_out: int = 0  # rows whose cell held a label the task does not know

    @classmethod
    def build(cls, task: str, options: dict, features, dataset, where: str, rules: CellRules, table: bool):
        """The encoder of `task` as `options` describe it, its type and labels completed from the column."""
        column = options["column"]
        given = {key: value for key, value in options.items() if key not in CELL_OPTIONS}
        empty = check_choice(f"task {task!r}: empty", options.get("empty", "none"), EMPTY_MEANINGS)
        feature = features[column] if features is not None else None
        reading = read_feature(feature, task, column, given.get("type"), table=table, where=where)
        if given.get("type") is not None and not reading.allows(given["type"]):
            raise UserError(
                f"{where}: task {task!r} gives type={given['type']!r} but column {column!r} holds "
                f"{reading.inferred['type']} labels; drop 'type' from the task (it comes from the data) or cast "
                "the column"
            )
        spec_fields = {**reading.inferred, **given}
        if given.get("labels") is None and spec_fields.get("type") in ("classification", "multilabel"):
            if spec_fields.get("labels") is None and "num_outputs" not in spec_fields:
                spec_fields["labels"] = _labels_from_values(task, column, spec_fields, reading, dataset, rules, where)
        if "type" not in spec_fields:
            raise UserError(f"{where}: task {task!r} needs a type (classification, multilabel or regression)")
        if spec_fields["type"] == "regression" and spec_fields.get("target_scaling") != "none":
            if spec_fields.get("target_statistics") is None and dataset is not None and feature is not None:
                spec_fields["target_statistics"] = regression_statistics(dataset, column)
        try:
            spec = TaskSpec(name=task, **spec_fields)
        except (TypeError, ValueError) as error:  # the spec's own checks of what the user gave
            raise UserError(f"{where}: {error}") from None
        id_names = reading.id_names if reading.id_names != spec.labels else None
        encoder = cls(spec, reading.cells_are_ids, id_names, empty, rules)
        encoder.check_known_names(column, where)
        return encoder

    def check_known_names(self, column: str, where: str) -> None:
        """Refuses (when training) a column whose class names include labels the task does not know."""
        if self.id_names is None or self.rules.unknown_labels != "error":
            return
        unknown = [name for name in self.id_names if name not in self.spec.label2id]
        if unknown:
            raise UserError(
                f"{where}: column {column!r} has labels {unknown} that task {self.spec.name!r} does not know (its "
                f"labels: {self.spec.labels}); a model learns new labels with a new head (backbone: MODEL, or "
                "remove_task / add_task), or leave those rows out"
            )

    def encode(self, value: Any) -> Any:
        spec = self.spec
        if spec.type == "regression":
            return self._encode_regression(value)
        unknown_before = sum(self.unknown.values())
        if spec.type == "classification":
            if value is None or (isinstance(value, str) and not value.strip()):
                return MISSING_CLASS
            encoded = self._class_id(value)
        else:
            encoded = self._multi_hot(value)
        if sum(self.unknown.values()) > unknown_before:  # a label the task does not know: left out, counted
            self.rows_left_out += 1
            return MISSING_CLASS if spec.type == "classification" else [float(MISSING_CLASS)] * spec.num_outputs
        return encoded

    def _multi_hot(self, value: Any) -> list[float]:
        missing = [float(MISSING_CLASS)] * self.spec.num_outputs
        if value is None and not self.rules.nulls_are_empty:
            return missing
        if isinstance(value, int) and not isinstance(value, bool):
            value = [value]
        names = [] if value is None else value if self.cells_are_ids else cell_names(value, self.rules.separator)
        if not names and self.empty == "missing":
            return missing
        multi_hot = [0.0] * self.spec.num_outputs
        for item in names:
            class_id = self._class_id(item)
            if class_id != MISSING_CLASS:
                multi_hot[class_id] = 1.0
        return multi_hot

    def _class_id(self, value: Any) -> int:
        spec = self.spec
        if self.cells_are_ids:
            if isinstance(value, bool) or not isinstance(value, int):
                raise UserError(f"task {spec.name!r}: expected a class id, got {value!r}")
            if value == MISSING_CLASS:
                return value
            if self.id_names is None:
                if not 0 <= value < spec.num_outputs:
                    raise UserError(f"task {spec.name!r}: label {value} out of range ({spec.num_outputs} labels)")
                return value
            value = self.id_names[value]
        name = as_name(value)
        class_id = spec.label2id.get(name)
        if class_id is None:
            if self.rules.unknown_labels == "count":
                self.unknown[name] += 1
                return MISSING_CLASS
            raise UserError(f"task {spec.name!r}: label {name!r} is not among its labels {spec.labels}")
        return class_id

    def _encode_regression(self, value: Any) -> list[float]:
        size = self.spec.num_outputs
        if value is None:
            return [math.nan] * size
        values = list(value) if isinstance(value, (list, tuple)) else [value]
        if len(values) != size:
            raise UserError(f"task {self.spec.name!r}: expected {size} values, got {len(values)}")
        try:
            return [math.nan if v is None else float(v) for v in values]
        except (TypeError, ValueError):
            raise UserError(f"task {self.spec.name!r}: regression target {value!r} is not numeric") from None


def _labels_from_values(task, column, spec_fields, reading, dataset, rules, where) -> list[str]:
    if reading.cells_are_ids:
        raise UserError(
            f"{where}: task {task!r}: column {column!r} holds class ids with no class names; give the task's "
            "labels (or num_outputs), or cast the column to ClassLabel"
        )
    if isinstance(dataset, IterableDataset) or dataset is None:
        raise UserError(
            f"{where}: task {task!r} needs its labels (class names): column {column!r} carries no ClassLabel "
            "names and a streaming source cannot be scanned for them"
        )
    multilabel = spec_fields["type"] == "multilabel"
    return distinct_names(dataset, column, multilabel=multilabel, separator=rules.separator)


__all__ = [
    "CELL_OPTIONS",
    "EMPTY_MEANINGS",
    "SPEC_OPTIONS",
    "UNKNOWN_LABELS",
    "CellRules",
    "TaskEncoder",
    "normalise_tasks",
    "task_options",
]
