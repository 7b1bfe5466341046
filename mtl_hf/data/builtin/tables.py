"""A built-in dataset written as a shop would hold its catalogue: photo files beside a CSV with an id column and
its labels as text (`data/tables.py` reads it back), so that the catalogue path runs on data with known answers."""

from __future__ import annotations

import csv
from pathlib import Path

from datasets import ClassLabel, Dataset


def write_catalogue_table(data: Dataset, folder: str | Path, name: str, *, image_column: str = "image") -> Path:
    """Writes each row's image as `folder/photos/{name}NNNNN.png` and `folder/{name}.csv` with `sku`,
    `image_path` and every other column (class names; a multilabel row's names joined by `|`; numbers as they
    are; a missing label an empty cell, which a table reads as no labels for a multilabel task); returns the CSV's
    path. Photos already written are kept."""
    folder = Path(folder)
    (folder / "photos").mkdir(parents=True, exist_ok=True)
    columns = [column for column in data.column_names if column != image_column]

    def text(column: str, value) -> str:
        if value is None:  # a missing label stays an empty cell
            return ""
        feature = data.features[column]
        inner = getattr(feature, "feature", None)
        if isinstance(feature, ClassLabel):
            return feature.names[value]
        if isinstance(inner, ClassLabel):
            return "|".join(inner.names[v] for v in value)
        return str(value)

    records = []
    for index, row in enumerate(data):
        path = f"photos/{name}{index:05d}.png"
        if not (folder / path).is_file():
            row[image_column].save(folder / path)
        record = {"sku": f"{name.upper()}-{index}", "image_path": path}
        record.update({column: text(column, row[column]) for column in columns})
        records.append(record)
    table = folder / f"{name}.csv"
    with open(table, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=["sku", "image_path", *columns])
        writer.writeheader()
        writer.writerows(records)
    return table


__all__ = ["write_catalogue_table"]
