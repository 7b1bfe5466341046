"""What a column says about its task: the type and labels its features give (or its values, in a catalogue
table), the regression targets' statistics, and whether an image column can hold images."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from datasets import ClassLabel, Dataset, IterableDataset, List, Value
from datasets.features import Image as ImageFeature
from datasets.features import LargeList
from datasets.features import Sequence as SequenceFeature

from ..errors import UserError

_FLOAT_DTYPES = {"float16", "float32", "float64", "bfloat16"}
_INT_DTYPES = {"int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"}
_TEXT_DTYPES = {"string", "large_string"}
_IMAGE_VALUE_DTYPES = {"string", "large_string", "binary", "large_binary"}
STATISTICS_STREAM_ROWS = 10_000
"""A streaming source's regression statistics and label counts come from its first rows (a map-style one's from
every row)."""


def column_cells(dataset: Dataset | IterableDataset, column: str) -> list[Any]:
    """The cells of `column` that statistics are computed from: every row, or a stream's first rows."""
    if isinstance(dataset, IterableDataset):
        return [row[column] for row in dataset.select_columns([column]).take(STATISTICS_STREAM_ROWS)]
    return dataset[column]


def check_image_feature(feature: Any, column: str, where: str) -> None:
    """Refuses an image column whose feature cannot hold images (an Image, paths, bytes or pixel arrays)."""
    if isinstance(feature, ImageFeature):
        return
    if isinstance(feature, Value) and feature.dtype in _IMAGE_VALUE_DTYPES:
        return  # file paths or encoded bytes
    if isinstance(feature, (List, LargeList, SequenceFeature)) or type(feature).__name__.startswith("Array"):
        return  # pixel arrays
    raise UserError(
        f"{where}: image column {column!r} holds {describe(feature)}, not images; set image_column to the "
        "column with the images (an Image feature, file paths, bytes or pixel arrays)"
    )


def describe(feature: Any) -> str:
    if isinstance(feature, Value):
        return f"{feature.dtype} values"
    return type(feature).__name__


@dataclass(frozen=True)
class ColumnReading:
    """What a column's features say of its task."""

    inferred: dict[str, Any]
    """TaskSpec fields: the type, and the labels where the column names them."""
    cells_are_ids: bool = False
    """Cells hold class ids rather than names or values."""
    id_names: list[str] | None = None
    """The names those ids stand for (a ClassLabel's); None: the ids of the labels the task gives."""
    also: tuple[str, ...] = ()
    """Other types a task may give the column (a text column's labels may be split into several)."""

    def allows(self, task_type: str) -> bool:
        inferred = self.inferred.get("type")
        return inferred is None or task_type == inferred or task_type in self.also


def read_feature(feature: Any, task: str, column: str, given_type: str | None, *, table: bool, where: str):
    """What a column's feature says of its task, as `ColumnReading`.

    In a catalogue `table`, as `mtl-hf prepare` reads one, whole numbers and booleans are class names.
    """
    inner = getattr(feature, "feature", None)
    if isinstance(feature, ClassLabel):
        return ColumnReading({"type": "classification", "labels": list(feature.names)}, True, list(feature.names))
    if isinstance(inner, ClassLabel):
        return ColumnReading({"type": "multilabel", "labels": list(inner.names)}, True, list(inner.names))
    if isinstance(feature, Value) and feature.dtype in _FLOAT_DTYPES:
        return ColumnReading({"type": "regression", "num_outputs": 1})
    if isinstance(inner, Value) and inner.dtype in _FLOAT_DTYPES and getattr(feature, "length", -1) > 0:
        return ColumnReading({"type": "regression", "num_outputs": feature.length})
    if isinstance(feature, Value) and (feature.dtype in _INT_DTYPES or feature.dtype == "bool"):
        if table or given_type == "regression":
            return ColumnReading({"type": "classification"}, also=("regression", "multilabel"))
        if given_type in (None, "multilabel"):
            raise UserError(
                f"{where}: column {column!r} holds {feature.dtype} values with no class names: give its type and "
                f"labels (e.g. tasks={{{task!r}: {{'type': 'classification', 'labels': [...]}}}}), or cast the "
                "column to ClassLabel"
            )
        return ColumnReading({}, cells_are_ids=True)
    if isinstance(inner, Value) and inner.dtype in _INT_DTYPES:
        return ColumnReading({"type": "multilabel"}, cells_are_ids=not table)
    if isinstance(feature, Value) and feature.dtype in _TEXT_DTYPES:
        return ColumnReading({"type": "classification"}, also=("multilabel",))
    if isinstance(inner, Value) and inner.dtype in _TEXT_DTYPES:
        return ColumnReading({"type": "multilabel"})
    if feature is not None:
        raise UserError(
            f"{where}: column {column!r} holds {describe(feature)}, which is not a label column "
            "(ClassLabel, a list of ClassLabel, strings, numbers)"
        )
    return ColumnReading({})


def as_name(value: Any) -> str:
    """A cell as a class name, as Spark casts it: booleans "true" / "false", numbers as written."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value).strip()


def cell_names(value: Any, separator: str | None) -> list[str] | None:
    """The class names in a cell: a list's items, or a text cell split on `separator`; None for a null cell."""
    if value is None:
        return None
    items = value if isinstance(value, (list, tuple)) else (str(value).split(separator) if separator else [value])
    return [name for name in (as_name(item) for item in items if item is not None) if name]


def distinct_names(dataset: Dataset, column: str, *, multilabel: bool, separator: str | None) -> list[str]:
    """A map-style column's distinct class names, sorted (numerically where they are all numbers)."""
    names: set[str] = set()
    for value in dataset[column]:
        found = cell_names(value, separator if multilabel else None)
        names.update(found or [])
    try:
        return sorted(names, key=float)
    except ValueError:
        return sorted(names)


def regression_statistics(dataset: Dataset | IterableDataset, column: str) -> dict[str, Any] | None:
    """`{"mean", "std", "count"}` of a regression column's present values, per output; None without any.

    A constant output gets std 1 (nothing to scale).
    """
    rows = [_as_numbers(cell) for cell in column_cells(dataset, column)]
    width = max((len(row) for row in rows if row is not None), default=0)
    if width == 0:
        return None
    values = np.array([row if row is not None and len(row) == width else [math.nan] * width for row in rows])
    count = int((~np.isnan(values)).all(axis=1).sum())
    if count == 0:
        return None
    mean, std = np.nanmean(values, axis=0), np.nanstd(values, axis=0)
    return {"mean": mean.tolist(), "std": np.where(std > 0, std, 1.0).tolist(), "count": count}


def _as_numbers(cell: Any) -> list[float] | None:
    if cell is None:
        return None
    try:
        return [math.nan if v is None else float(v) for v in (cell if isinstance(cell, (list, tuple)) else [cell])]
    except (TypeError, ValueError):  # not numeric: the encoder names the row when it meets it
        return None


__all__ = [
    "STATISTICS_STREAM_ROWS",
    "column_cells",
    "ColumnReading",
    "as_name",
    "cell_names",
    "check_image_feature",
    "describe",
    "distinct_names",
    "read_feature",
    "regression_statistics",
]
