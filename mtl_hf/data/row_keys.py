"""Rows recognised by what they are, not where they lie: each row's key hashed to 64 bits.

A row's key is its id column's value where the source has one (`id_column`, e.g. a product's sku), else its
photo as the table names it (the path as written, or the bytes of a photo stored in the data). The same rows in a
copied, renamed or grown table have the same keys, so a model that records its training rows' keys
(`training_rows.safetensors`, 8 bytes a row: 7.6 MiB for a million rows) can tell which rows of any table it has
seen. Two different keys share a hash with odds of about n / 2**64 per row (5e-14 against a million training rows).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import datasets
import numpy as np

from ..errors import UserError


def key_column(source) -> str:
    """The column whose values identify `source`'s rows."""
    return source.id_column or source.image_column


def hashed_keys(source) -> np.ndarray | None:
    """The 64-bit hash of each row's key (in row order), or None for a stream, whose rows cannot be listed
    without reading it."""
    return None if source.is_streaming else column_keys(source.dataset, key_column(source))


def column_keys(rows, column: str) -> np.ndarray:
    """The 64-bit hash of `column` in each of `rows` (a map-style `datasets.Dataset`); a photo column is keyed by
    its stored path or bytes, never decoded."""
    if isinstance(rows.features[column], datasets.Image):
        rows = rows.cast_column(column, datasets.Image(decode=False))
    return hash_values(rows[column])


def hash_values(values: Iterable[Any]) -> np.ndarray:
    return np.fromiter((_hash(value) for value in values), dtype=np.uint64)


def _hash(value: Any) -> int:
    if isinstance(value, dict):  # a photo stored in the data ({"bytes", "path"}): its path where it has one
        value = value.get("path") or value.get("bytes")
    if value is None:
        return 0  # rows without a key cannot be recognised; 0 is never recorded (see `unique_keys`)
    data = value if isinstance(value, bytes) else str(value).strip().encode()
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little") or 1


def unique_keys(*arrays: np.ndarray | None) -> np.ndarray:
    """The sorted distinct keys of `arrays` (rows without a key left out)."""
    present = [array for array in arrays if array is not None and len(array)]
    keys = np.unique(np.concatenate(present)) if present else np.zeros(0, dtype=np.uint64)
    return keys[keys != 0]


@dataclass(frozen=True)
class Overlap:
    """Which rows of a scored source are training rows."""

    seen: np.ndarray
    """One bool per row: the row's key is among the training rows' keys."""
    column: str

    @property
    def count(self) -> int:
        return int(self.seen.sum())


def overlap(rows, training_keys: np.ndarray, columns: Sequence[str]) -> Overlap | None:
    """Which of `rows` (a map-style `datasets.Dataset`, with every column of its table) have a training row's
    key, by the first of `columns` (the columns the training rows were keyed by) that it has; None where it has
    none of them."""
    column = next((name for name in columns if name in rows.column_names), None)
    if column is None or not len(training_keys):
        return None
    keys = column_keys(rows, column)
    return Overlap(seen=np.isin(keys, training_keys) & (keys != 0), column=column)


def refuse_overlapping_evaluation(train_sources: Sequence, eval_sources: Sequence) -> None:
    """A one-line error when evaluation rows are also training rows (a copy of the training table given as the
    evaluation data, a split rule that lets rows through): their scores would measure fit, not new photos."""
    by_column: dict[str, list[np.ndarray]] = {}
    for source in train_sources:
        keys = hashed_keys(source)
        if keys is not None:
            by_column.setdefault(key_column(source), []).append(keys)
    for column, arrays in by_column.items():
        training_keys = unique_keys(*arrays)
        for source in eval_sources:
            found = None if source.is_streaming else overlap(source.dataset, training_keys, [column])
            if found is not None and found.count:
                raise UserError(
                    f"{found.count} of the {source.num_rows} evaluation rows of {source.name!r} are training rows "
                    f"too (the same {column!r}): their scores would measure fit, not new photos; evaluate on rows "
                    "the training data does not hold (another split, or a table without them)"
                )


__all__ = [
    "Overlap",
    "column_keys",
    "hash_values",
    "hashed_keys",
    "key_column",
    "overlap",
    "refuse_overlapping_evaluation",
    "unique_keys",
]
