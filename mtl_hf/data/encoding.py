"""From a label column to a task: its spec (type and labels read from the column's features where they can
be) and the encoder that turns each cell into the model's target conventions (a class id or -100, a
multi-hot vector or -100, floats or NaN)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
from datasets import ClassLabel, Dataset, IterableDataset, List, Value
from datasets.features import Image as ImageFeature
from datasets.features import LargeList
from datasets.features import Sequence as SequenceFeature

from ..errors import UserError
from ..models.mtl_vit.configuration_mtl_vit import TaskSpec
from ..models.mtl_vit.heads_mtl_vit import MISSING_CLASS

SPEC_OPTIONS = {f.name for f in fields(TaskSpec)} - {"name"}
_FLOAT_DTYPES = {"float16", "float32", "float64", "bfloat16"}
_INT_DTYPES = {"int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"}
_TEXT_DTYPES = {"string", "large_string"}
_IMAGE_VALUE_DTYPES = {"string", "large_string", "binary", "large_binary"}


def normalise_tasks(tasks: Any) -> dict[str, dict[str, Any]]:
    """`tasks` as given to a source (a column, a list of columns, or a mapping task -> column or -> options)
    as `{task: {"column": ..., **TaskSpec fields}}`."""
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
    for task, options in items:
        options = {"column": options} if isinstance(options, str) else dict(options)
        options.setdefault("column", task)
        unknown = sorted(set(options) - SPEC_OPTIONS - {"column"})
        if unknown:
            raise UserError(f"task {task!r}: unknown options {unknown}; use 'column' and TaskSpec fields")
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


def check_image_feature(feature: Any, column: str, where: str) -> None:
    """Refuses an image column whose feature cannot hold images (an Image, paths, bytes or pixel arrays)."""
    if isinstance(feature, ImageFeature):
        return
    if isinstance(feature, Value) and feature.dtype in _IMAGE_VALUE_DTYPES:
        return  # file paths or encoded bytes
    if isinstance(feature, (List, LargeList, SequenceFeature)) or type(feature).__name__.startswith("Array"):
        return  # pixel arrays
    raise UserError(
        f"{where}: image column {column!r} holds {_describe(feature)}, not images; set image_column to the "
        "column with the images (an Image feature, file paths, bytes or pixel arrays)"
    )


def _describe(feature: Any) -> str:
    if isinstance(feature, Value):
        return f"{feature.dtype} values"
    return type(feature).__name__


def _read_feature(feature: Any, task: str, column: str, given_type: str | None, where: str):
    """What a column's feature says of its task: (inferred TaskSpec fields, whether cells are class ids)."""
    inner = getattr(feature, "feature", None)
    if isinstance(feature, ClassLabel):
        return {"type": "classification", "labels": list(feature.names)}, True
    if isinstance(inner, ClassLabel):
        return {"type": "multilabel", "labels": list(inner.names)}, True
    if isinstance(feature, Value) and feature.dtype in _FLOAT_DTYPES:
        return {"type": "regression", "num_outputs": 1}, False
    if isinstance(inner, Value) and inner.dtype in _FLOAT_DTYPES and getattr(feature, "length", -1) > 0:
        return {"type": "regression", "num_outputs": feature.length}, False
    if isinstance(feature, Value) and feature.dtype in _INT_DTYPES:
        if given_type in (None, "multilabel"):
            raise UserError(
                f"{where}: column {column!r} holds {feature.dtype} values with no class names: give its type and "
                f"labels (e.g. tasks={{{task!r}: {{'type': 'classification', 'labels': [...]}}}}), or cast the "
                "column to ClassLabel"
            )
        return {}, True
    if isinstance(inner, Value) and inner.dtype in _INT_DTYPES:
        return {"type": "multilabel"}, True
    if isinstance(feature, Value) and feature.dtype in _TEXT_DTYPES:
        return {"type": "classification"}, False
    if isinstance(inner, Value) and inner.dtype in _TEXT_DTYPES:
        return {"type": "multilabel"}, False
    if feature is not None:
        raise UserError(
            f"{where}: column {column!r} holds {_describe(feature)}, which is not a label column "
            "(ClassLabel, a list of ClassLabel, strings, numbers)"
        )
    return {}, False


@dataclass
class TaskEncoder:
    """Turns one column's values into the model's target conventions for one task."""

    spec: TaskSpec
    ids_are_given: bool  # column values are class ids (ClassLabel / int) rather than names

    @classmethod
    def build(cls, task: str, options: dict, features, dataset, where: str) -> TaskEncoder:
        """The encoder of `task` as `options` describe it, its type and labels completed from the column."""
        column = options["column"]
        given = {key: value for key, value in options.items() if key != "column"}
        feature = features[column] if features is not None else None
        inferred, ids_are_given = _read_feature(feature, task, column, given.get("type"), where)
        for key in ("type", "labels"):
            if given.get(key) is not None and inferred.get(key) is not None and given[key] != inferred[key]:
                raise UserError(
                    f"{where}: task {task!r} gives {key}={given[key]!r} but column {column!r} has {key} "
                    f"{inferred[key]!r}; drop {key!r} from the task (it comes from the data) or cast the column"
                )
        spec_fields = {**inferred, **given}
        if spec_fields.get("type") in ("classification", "multilabel") and spec_fields.get("labels") is None:
            if "num_outputs" not in spec_fields:
                if ids_are_given:
                    raise UserError(
                        f"{where}: task {task!r}: column {column!r} holds class ids with no class names; "
                        "give the task's labels (or num_outputs), or cast the column to ClassLabel"
                    )
                if isinstance(dataset, IterableDataset) or feature is None:
                    raise UserError(
                        f"{where}: task {task!r} needs its labels (class names): column {column!r} "
                        "carries no ClassLabel names and a streaming source cannot be scanned for them"
                    )
                spec_fields["labels"] = _distinct_names(dataset, column, spec_fields["type"] == "multilabel")
        if "type" not in spec_fields:
            raise UserError(f"{where}: task {task!r} needs a type (classification, multilabel or regression)")
        if spec_fields["type"] == "regression" and spec_fields.get("target_scaling") != "none":
            if spec_fields.get("target_statistics") is None and dataset is not None and feature is not None:
                spec_fields["target_statistics"] = regression_statistics(dataset, column)
        try:
            spec = TaskSpec(name=task, **spec_fields)
        except (TypeError, ValueError) as error:  # the spec's own checks of what the user gave
            raise UserError(f"{where}: {error}") from None
        return cls(spec=spec, ids_are_given=ids_are_given)

    def encode(self, value: Any) -> Any:
        spec = self.spec
        if spec.type == "regression":
            return self._encode_regression(value)
        if spec.type == "classification":
            return MISSING_CLASS if value is None else self._class_id(value)
        if value is None:
            return [float(MISSING_CLASS)] * spec.num_outputs
        if isinstance(value, (str, int)):
            value = [value]
        multi_hot = [0.0] * spec.num_outputs
        for item in value:
            multi_hot[self._class_id(item)] = 1.0
        return multi_hot

    def _class_id(self, value: Any) -> int:
        spec = self.spec
        if isinstance(value, str):
            class_id = spec.label2id.get(value)
            if class_id is None:
                raise UserError(f"task {spec.name!r}: label {value!r} is not among its labels {spec.labels}")
            return class_id
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"task {spec.name!r}: expected a class id or name, got {value!r}")
        if value == MISSING_CLASS:
            return value
        if not 0 <= value < spec.num_outputs:
            raise UserError(f"task {spec.name!r}: label {value} out of range ({spec.num_outputs} labels)")
        return value

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


STATISTICS_STREAM_ROWS = 10_000
"""A streaming source's regression statistics come from its first rows (a map-style one's from every row)."""


def regression_statistics(dataset: Dataset | IterableDataset, column: str) -> dict[str, Any] | None:
    """`{"mean", "std", "count"}` of a regression column's present values, per output; None without any.

    A constant output gets std 1 (nothing to scale).
    """
    if isinstance(dataset, IterableDataset):
        cells = [row[column] for row in dataset.select_columns([column]).take(STATISTICS_STREAM_ROWS)]
    else:
        cells = dataset[column]
    rows = [_as_numbers(cell) for cell in cells]
    width = max((len(row) for row in rows if row is not None), default=0)
    values = np.array([row if row is not None and len(row) == width else [math.nan] * width for row in rows])
    present = ~np.isnan(values) if values.size else values.astype(bool)
    count = int(present.all(axis=1).sum()) if width else 0
    if count == 0:
        return None
    mean = np.nanmean(values, axis=0)
    std = np.nanstd(values, axis=0)
    return {"mean": mean.tolist(), "std": np.where(std > 0, std, 1.0).tolist(), "count": count}


def _as_numbers(cell: Any) -> list[float] | None:
    if cell is None:
        return None
    try:
        return [math.nan if v is None else float(v) for v in (cell if isinstance(cell, (list, tuple)) else [cell])]
    except (TypeError, ValueError):  # not numeric: the encoder names the row when it meets it
        return None


def _distinct_names(dataset: Dataset, column: str, nested: bool) -> list[str]:
    values = dataset[column]
    if nested:
        values = [item for value in values if value is not None for item in value]
    return sorted({str(value) for value in values if value is not None})


__all__ = [
    "SPEC_OPTIONS",
    "TaskEncoder",
    "check_image_feature",
    "normalise_tasks",
    "regression_statistics",
    "task_options",
]
