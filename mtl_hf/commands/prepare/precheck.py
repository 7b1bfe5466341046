"""What `prepare` checks before Spark starts (which takes most of a minute): the catalogue's columns, from its
header, and its photo paths, from its first rows, so that a wrong column or paths written relative to the wrong
folder fail in seconds. Local catalogues only; one in object storage is checked by Spark itself."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ...data.tables import photo_location
from ...errors import UserError

SAMPLE_ROWS = 200


def catalogue_sample(catalogue: str, table_format: str, rows: int = SAMPLE_ROWS) -> tuple[list[str], list[dict]]:
    """(the columns, the first `rows` rows as dicts) of a local catalogue, read without Spark."""
    path = Path(catalogue)
    if table_format == "csv":
        import pyarrow.csv as pv

        reader = pv.open_csv(path)  # a block at a time: the first holds the sample (types matter to Spark only)
        columns = reader.schema.names
        batches, count = [], 0
        for batch in reader:
            batches.extend(batch.to_pylist())
            count += batch.num_rows
            if count >= rows:
                break
        return columns, batches[:rows]
    if table_format == "json":
        columns: dict[str, None] = {}
        sample = []
        with open(path, encoding="utf-8") as file:
            for line in file:
                if line.strip():
                    sample.append(json.loads(line))
                    columns.update(dict.fromkeys(sample[-1]))
                if len(sample) >= rows:
                    break
        return list(columns), sample
    import pyarrow.parquet as pq

    first = path if path.is_file() else sorted(path.glob("*.parquet"))[0]
    parquet = pq.ParquetFile(first)
    batch = next(parquet.iter_batches(batch_size=rows), None)
    return parquet.schema_arrow.names, [] if batch is None else batch.to_pylist()


def check_before_spark(
    catalogue: str,
    table_format: str,
    *,
    image_column: str,
    columns_needed: list[tuple[str, str]],
    regression_tasks: list[str] = (),
) -> None:
    """The named columns exist (`columns_needed`: (column, the flag that named it)), the tasks typed regression
    hold numbers in the first rows, and not every photo path of those rows leads nowhere."""
    if "://" in catalogue:
        return
    columns, sample = catalogue_sample(catalogue, table_format)
    require_columns(catalogue, columns, columns_needed)
    for task in regression_tasks:
        bad = [row[task] for row in sample if row.get(task) not in (None, "") and not _is_number(row[task])]
        if bad:
            raise UserError(
                f"--tasks: regression column {task!r} has {len(bad)} values that are not numbers in the first "
                f"{len(sample)} rows, e.g. {str(bad[0])!r}; clean them or give the task another type"
            )
    base = str(Path(catalogue).resolve().parent)
    local = [str(row[image_column]).strip() for row in sample if _is_local_path(row.get(image_column))]
    resolved = [photo_location(path, base) for path in local]
    if resolved and not any(os.path.exists(path) for path in resolved):
        example = os.path.normpath(resolved[0])
        raise UserError(
            f"none of the first {len(resolved)} photo paths of {catalogue} exist, e.g. {example}: "
            f"relative paths are read from the catalogue's folder {base}; write them relative to it, or absolute"
        )


def require_columns(catalogue: str, columns: list[str], columns_needed: list[tuple[str, str]]) -> None:
    """Each of `columns_needed` ((column, the flag that named it)) among the catalogue's `columns`."""
    for column, flag in columns_needed:
        if column not in columns:
            raise UserError(f"catalogue {catalogue} has no column {column!r} (from {flag}); its columns are {columns}")


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def _is_local_path(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip()) and "://" not in value


__all__ = ["SAMPLE_ROWS", "catalogue_sample", "check_before_spark", "require_columns"]
