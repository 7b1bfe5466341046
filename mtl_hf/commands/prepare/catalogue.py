"""The catalogue on Spark's driver: its format, its columns, the tasks the user names and their types, and each
task's vocabulary (the distinct labels, sorted, built by Spark)."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from ...errors import MissingPathError, UserError
from ...models.mtl_vit.tasks_mtl_vit import TASK_TYPES
from ...utils.spark import INSTALL_HINT, spark_session
from .shards import CatalogueTask


def parse_tasks(spec: str | Sequence[str]) -> list[tuple[str, str | None]]:
    """`"category,tags:multilabel,size:regression"` -> `[("category", None), ("tags", "multilabel"), ...]`."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    tasks = []
    for item in (item.strip() for item in items):
        name, _, kind = item.partition(":")
        if not name:
            raise UserError(f"--tasks {spec!r}: an empty task name; give comma-separated columns, e.g. category,colour")
        if kind and kind not in TASK_TYPES:
            raise UserError(f"--tasks: task {name!r} has type {kind!r}; use one of {', '.join(TASK_TYPES)}")
        tasks.append((name, kind or None))
    duplicated = [name for name, count in Counter(name for name, _ in tasks).items() if count > 1]
    if duplicated:
        raise UserError(f"--tasks names {duplicated[0]!r} twice")
    return tasks


def catalogue_format(catalogue: str) -> str:
    """`csv`, `parquet` or `json`, checked before Spark starts (which takes seconds)."""
    path = Path(catalogue)
    if "://" not in catalogue and not path.exists():
        raise MissingPathError(f"no catalogue at {catalogue}")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix == ".parquet" or (path.is_dir() and any(path.glob("*.parquet"))):
        return "parquet"
    if suffix in (".jsonl", ".json", ".ndjson"):
        return "json"
    raise UserError(
        f"catalogue {catalogue}: unknown table format {suffix or '(no suffix)'!r}; "
        "give a .csv (with a header), .parquet or .jsonl file"
    )


def read_catalogue(spark, catalogue: str, table_format: str):
    if table_format == "csv":
        return spark.read.csv(catalogue, header=True, inferSchema=True, escape='"', multiLine=False)
    return spark.read.parquet(catalogue) if table_format == "parquet" else spark.read.json(catalogue)


def vocabulary(
    table, name: str, kind: str | None, separator: str, *, empty: str = "none", fixed: list[str] | None = None
) -> CatalogueTask:
    """The task's type (given or from the column's Spark type), its sorted labels (or the `fixed` ones, with the
    rows of each label outside them) and its missing count. An empty multilabel text cell is none of the labels,
    or missing (`empty`)."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    data_type = table.schema[name].dataType
    if kind is None:
        if isinstance(data_type, T.ArrayType):
            kind = "multilabel"
        elif isinstance(data_type, (T.FloatType, T.DoubleType, T.DecimalType)):
            kind = "regression"
        else:
            kind = "classification"
    if empty == "missing" and kind != "multilabel":
        raise UserError(f"--empty_missing {name}: only a multilabel task's empty cells can mean none or missing")
    column = F.col(name)
    if kind == "regression":
        if isinstance(data_type, (T.ArrayType, T.MapType, T.StructType)):
            raise UserError(
                f"--tasks: column {name!r} holds {data_type.simpleString()}, not numbers; "
                "a regression task needs one number per row"
            )
        number = column.try_cast("double")  # null where the text is not a number (Spark 4 casts strictly)
        counts = table.agg(
            F.sum(column.isNull().cast("long")).alias("missing"),
            F.sum((column.isNotNull() & number.isNull()).cast("long")).alias("bad"),
            F.first(F.when(column.isNotNull() & number.isNull(), column.cast("string")), ignorenulls=True).alias("ex"),
        ).first()
        if counts["bad"]:
            raise UserError(
                f"--tasks: regression column {name!r} has {counts['bad']} values that are not numbers, "
                f"e.g. {counts['ex']!r}; clean them or give the task another type"
            )
        return CatalogueTask(name=name, type=kind, missing=int(counts["missing"] or 0))
    items = label_items(column, data_type, kind, separator)
    counted = table.select(F.explode(F.array_distinct(items)).alias("label")).groupBy("label").count().collect()
    rows_of = {row["label"]: row["count"] for row in counted}
    labels = sorted(rows_of) if fixed is None else list(fixed)
    unknown = tuple(sorted((label, count) for label, count in rows_of.items() if label not in labels))
    from_array = isinstance(data_type, T.ArrayType)
    # An array column says "none of the labels" with [] and "unknown" with null; a text cell has only "", and
    # `empty` says which it means (a classification cell that is empty is missing).
    if from_array:
        missing = table.where(column.isNull()).count()
    elif kind == "multilabel" and empty == "none":
        missing = 0
    else:
        missing = table.where(F.size(items) == 0).count()
    if not labels:
        raise UserError(f"--tasks: column {name!r} has no labels at all (every row is empty)")
    return CatalogueTask(
        name=name,
        type=kind,
        labels=tuple(labels),
        missing=missing,
        from_array=from_array,
        empty=empty if kind == "multilabel" else "none",
        unknown_labels=unknown,
    )


def label_items(column, data_type, kind: str, separator: str):
    """A Spark array of a cell's labels as trimmed strings, empty ones dropped (an empty array = missing)."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    if isinstance(data_type, T.ArrayType):
        items = F.transform(column, lambda item: F.trim(item.cast("string")))  # null (missing) stays null
    elif kind == "multilabel":
        items = F.transform(
            F.split(F.coalesce(column.cast("string"), F.lit("")), re.escape(separator)), lambda item: F.trim(item)
        )
    else:
        items = F.array(F.trim(F.coalesce(column.cast("string"), F.lit(""))))
    return F.filter(items, lambda item: item.isNotNull() & (item != ""))  # an empty array: missing (text) or none


def base_folder(catalogue: str) -> str:
    return "" if "://" in catalogue else str(Path(catalogue).resolve().parent)


__all__ = [
    "INSTALL_HINT",
    "base_folder",
    "catalogue_format",
    "parse_tasks",
    "read_catalogue",
    "spark_session",
    "vocabulary",
]
