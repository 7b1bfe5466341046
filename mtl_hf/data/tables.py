"""A shop's own catalogue as a table: one row per product, a column of photo paths and one column per attribute,
exported as CSV (with a header), JSON lines or Parquet. Read with pyarrow, as `mtl-hf prepare` reads it:

- an empty CSV cell is missing (null): a text column cannot tell "none of the tags" from "unknown", and a
  multilabel task decides what it means (`empty`, default "none of the labels");
- photo paths relative to the table are taken from the table's folder;
- rows fall into splits by a stable hash of their id (`id_column`, else the photo path), so that a row
  keeps its split when the catalogue grows, and a `split` column, where the table has one, decides instead.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from datasets import Dataset

from ..errors import MissingPathError, UserError

TABLE_SUFFIXES = {".csv": "csv", ".tsv": "csv", ".jsonl": "json", ".json": "json", ".ndjson": "json"}
DEFAULT_SPLITS = {"train": 0.8, "validation": 0.1, "test": 0.1}
SPLIT_COLUMN = "split"


def is_table(data: Any) -> bool:
    """A local CSV or JSON-lines file: a catalogue table (a Parquet file is read as Parquet data)."""
    return isinstance(data, (str, Path)) and Path(data).suffix.lower() in TABLE_SUFFIXES


def is_csv(data: Any) -> bool:
    """A CSV / TSV table, in which an empty cell is read as null: it cannot say "none" apart from "unknown"."""
    return is_table(data) and TABLE_SUFFIXES[Path(data).suffix.lower()] == "csv"


def read_table(path: str | Path) -> Dataset:
    """The rows of a CSV / TSV (header first) or JSON-lines catalogue, in memory."""
    import pyarrow.csv as pa_csv
    import pyarrow.json as pa_json

    path = Path(path)
    if not path.is_file():
        raise MissingPathError(f"no catalogue table at {path}")
    kind = TABLE_SUFFIXES[path.suffix.lower()]
    try:
        if kind == "csv":
            delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
            table = pa_csv.read_csv(
                path,
                parse_options=pa_csv.ParseOptions(delimiter=delimiter),
                convert_options=pa_csv.ConvertOptions(strings_can_be_null=True),
            )
        else:
            table = pa_json.read_json(path)
    except Exception as error:  # pyarrow's ArrowInvalid and kin: the file is not the table it claims to be
        raise UserError(f"{path} cannot be read as a {kind.upper()} table: {str(error).splitlines()[0]}") from None
    if table.num_rows == 0:
        raise UserError(f"{path} holds no rows")
    from datasets import Dataset  # half a second to import: not for the commands that never read a table

    return Dataset(table)


def table_columns(path: str | Path) -> list[str]:
    """The column names of a CSV / TSV or JSON-lines catalogue, read from its first block, not the whole file."""
    import pyarrow.csv as pa_csv

    path = Path(path)
    try:
        if TABLE_SUFFIXES[path.suffix.lower()] == "csv":
            delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
            with pa_csv.open_csv(path, parse_options=pa_csv.ParseOptions(delimiter=delimiter)) as reader:
                return reader.schema.names
        with open(path) as lines:
            first = next((line for line in lines if line.strip()), None)
        if first is not None:
            return list(json.loads(first))
    except (OSError, ValueError):  # pyarrow's ArrowInvalid is a ValueError; json's errors too
        pass
    return read_table(path).column_names  # it says in one line what is wrong with the file


def photo_location(value: Any, base_folder: str | None) -> Any:
    """A photo path relative to its catalogue table, as a path from here; an absolute path, a URL or any other
    value as it is."""
    if base_folder and isinstance(value, str) and value and "://" not in value and not os.path.isabs(value):
        return os.path.join(base_folder, value)
    return value


def check_fractions(fractions: Mapping[str, float]) -> dict[str, float]:
    """`fractions` (split -> share of the rows), checked: non-negative, summing to 1."""
    fractions = dict(fractions)
    if not fractions or any(not isinstance(v, (int, float)) or v < 0 for v in fractions.values()):
        raise UserError(f"split fractions must be a mapping split -> share >= 0, got {fractions}")
    if not math.isclose(sum(fractions.values()), 1.0, abs_tol=1e-6):
        raise UserError(f"split fractions must sum to 1, got {fractions} (sum {sum(fractions.values()):g})")
    return fractions


def split_of(key: str, fractions: Mapping[str, float]) -> str:
    """The split a row with id `key` belongs to: the same on every run, whatever other rows the table holds, and
    whatever order `fractions` names the splits in (a config file sorts them)."""
    position = int.from_bytes(hashlib.sha256(str(key).encode()).digest()[:8], "big") / 2**64
    ordered = sorted(fractions.items())
    cumulative = 0.0
    for name, share in ordered:
        cumulative += share
        if position < cumulative:
            return name
    return ordered[-1][0]  # float rounding at the very end


def in_split_order(counts: Mapping[str, int]) -> dict[str, int]:
    """`counts` keyed train, validation, test first, any other split after them by name."""
    order = {name: position for position, name in enumerate(DEFAULT_SPLITS)}
    return {name: counts[name] for name in sorted(counts, key=lambda name: (order.get(name, len(order)), name))}


def split_assignment(
    rows: Dataset, *, key_column: str, fractions: Mapping[str, float], where: str
) -> tuple[list[str | None], list[str]]:
    """Each row's split, and the splits there are: by the table's `split` column where it has one, else by the
    hash of `key_column`."""
    if SPLIT_COLUMN in rows.column_names:
        assigned = [str(value) if value is not None else None for value in rows[SPLIT_COLUMN]]
        return assigned, sorted({value for value in assigned if value})
    if key_column not in rows.column_names:
        raise UserError(
            f"{where}: no column {key_column!r} to assign rows to splits by; the columns are {rows.column_names}"
        )
    fractions = check_fractions(fractions)
    assigned = [split_of(value, fractions) for value in rows[key_column]]
    return assigned, sorted(name for name, share in fractions.items() if share > 0)


def select_split(rows: Dataset, split: str, *, key_column: str, fractions: Mapping[str, float], where: str):
    """The rows of `split` (see `split_assignment`)."""
    assigned, known = split_assignment(rows, key_column=key_column, fractions=fractions, where=where)
    if split not in known:
        raise UserError(f"{where}: no split {split!r}; its splits are {known}")
    return rows.select([index for index, value in enumerate(assigned) if value == split])


__all__ = [
    "DEFAULT_SPLITS",
    "SPLIT_COLUMN",
    "TABLE_SUFFIXES",
    "check_fractions",
    "in_split_order",
    "is_csv",
    "is_table",
    "photo_location",
    "read_table",
    "select_split",
    "split_assignment",
    "split_of",
    "table_columns",
]
