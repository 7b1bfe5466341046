"""The code that runs on Spark's executors: each partition of the catalogue becomes one Parquet shard.

Every photo is read (local path or URL), decoded (JPEGs in draft mode), checked, shrunk to the
shortest edge `size` and re-encoded as JPEG; its row's cells become the task's values (class ids,
sorted id lists, floats or None), and its id columns are kept as text. A photo that cannot be read or
decoded drops its row with a reason (`DROP_REASONS`); it never stops the job. Each row goes to the
split that the hash of its id gives (`data.tables.split_of`, as a catalogue table loaded without
Spark splits it), or that its `split` cell names, and a partition writes one file per split. This
module imports no Spark: executors unpickle `ShardWriter` and call `write_partition`.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ...data.images import to_rgb
from ...data.tables import SPLIT_COLUMN, photo_location, split_of
from .storage import filesystem, open_in

# Why a row is dropped; each reason is counted in the summary.
DROP_REASONS = {
    "no_image_path": "the image column is empty",
    "missing_file": "no file at the path",
    "unreadable_file": "the file could not be read",
    "not_an_image": "the file is not an image PIL can identify (an error page, a text file ...)",
    "corrupt_image": "the image is truncated or corrupt",
    "too_many_pixels": "the image exceeds PIL's decompression-bomb limit",
}


@dataclass(frozen=True)
class CatalogueTask:
    """One attribute column turned into a task: its name, column, type and (for labels) vocabulary."""

    name: str
    type: str
    labels: tuple[str, ...] = ()
    missing: int = 0
    from_array: bool = False  # read from an array column, where [] means "none of the labels", not missing
    empty: str = "none"  # what an empty multilabel text cell means: none of the labels, or missing
    unknown_labels: tuple[tuple[str, int], ...] = ()  # (label, rows) outside a fixed vocabulary: left missing

    def feature(self):
        from datasets import ClassLabel, List, Value

        if self.type == "classification":
            return ClassLabel(names=list(self.labels))
        if self.type == "multilabel":
            return List(ClassLabel(names=list(self.labels)))
        return Value("float32")


@dataclass(frozen=True)
class ShardWriter:
    """What a Spark task needs to turn its partition into one shard (pickled to the executors)."""

    output: str
    image_column: str
    tasks: list[CatalogueTask]
    base: str
    size: int
    quality: int
    separator: str
    shards: int
    storage_options: dict[str, Any]
    id_columns: tuple[str, ...] = ()
    split_key: str | None = None  # the column whose hash gives a row's split; None: the `split` column says
    split_fractions: dict[str, float] | None = None

    def write_partition(self, index: int, rows: Iterator) -> Iterator[dict[str, Any]]:
        encoders = {task.name: label_encoder(task, self.separator) for task in self.tasks}
        by_split: dict[str, dict[str, list]] = {}
        dropped: list[dict[str, Any]] = []
        rows_in = 0
        for row in rows:
            rows_in += 1
            ids = {column: row[column] for column in self.id_columns}
            location = row[self.image_column]
            photo, reason = self._photo(location)
            if reason is not None:
                dropped.append({**ids, "image": None if location is None else str(location), "reason": reason})
                continue
            columns = by_split.setdefault(self._split(row), self._empty_columns())
            columns["image"].append({"bytes": photo, "path": str(location)})
            for column, value in ids.items():
                columns[column].append(value)
            for task in self.tasks:
                columns[task.name].append(encoders[task.name](row[task.name]))
        files = [self._write(split, index, columns) for split, columns in sorted(by_split.items())]
        yield {"partition": index, "rows_in": rows_in, "dropped": dropped, "files": files}

    def _empty_columns(self) -> dict[str, list]:
        return {"image": [], **{column: [] for column in self.id_columns}, **{task.name: [] for task in self.tasks}}

    def _split(self, row) -> str:
        if self.split_key is None:
            return str(row[SPLIT_COLUMN])
        return split_of(str(row[self.split_key]), self.split_fractions)

    def _write(self, split: str, index: int, columns: dict[str, list]) -> dict[str, Any]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pydict(columns, schema=shard_schema(self.tasks, self.id_columns))
        name = f"{split}-{index:05d}-of-{self.shards:05d}.parquet"
        with open_in(self.output, name, "wb", self.storage_options) as file:
            pq.write_table(table, file)
            # the file's size, without asking the store
            return {"file": name, "split": split, "rows": len(columns["image"]), "bytes": file.tell()}

    def _photo(self, location: Any) -> tuple[bytes | None, str | None]:
        """The stored JPEG bytes of the photo at `location`, or why there are none."""
        from PIL import Image, UnidentifiedImageError

        if location is None or not str(location).strip():
            return None, "no_image_path"
        location = photo_location(str(location).strip(), self.base)
        try:
            fs, path = filesystem(location, self.storage_options)
            with fs.open(path, "rb") as file:
                data = file.read()
        except FileNotFoundError:
            return None, "missing_file"
        except OSError:
            return None, "unreadable_file"
        try:
            image = Image.open(io.BytesIO(data))
            if image.format == "JPEG":
                image.draft("RGB", (self.size, self.size))  # decode at the smallest scale that covers `size`
            image.load()
            image = to_rgb(image)
        except UnidentifiedImageError:
            return None, "not_an_image"
        except Image.DecompressionBombError:
            return None, "too_many_pixels"
        except (OSError, SyntaxError, ValueError):
            return None, "corrupt_image"
        shortest = min(image.size)
        if shortest > self.size:
            scale = self.size / shortest
            target = (max(self.size, round(image.width * scale)), max(self.size, round(image.height * scale)))
            image = image.resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=self.quality)
        return buffer.getvalue(), None


def shard_schema(tasks: list[CatalogueTask], id_columns: tuple[str, ...] = ()):
    """The shards' Arrow schema: the `datasets` features (so that readers get label names), and what each
    multilabel task's empty cells were read as (`mtl_hf` in the schema's metadata)."""
    from datasets import Features, Value
    from datasets import Image as ImageFeature

    features = Features(
        {
            "image": ImageFeature(),
            **{column: Value("string") for column in id_columns},
            **{task.name: task.feature() for task in tasks},
        }
    )
    rules = {
        task.name: {"empty": "none" if task.from_array else task.empty} for task in tasks if task.type == "multilabel"
    }
    schema = features.arrow_schema
    return schema.with_metadata({**(schema.metadata or {}), b"mtl_hf": json.dumps({"multilabel": rules}).encode()})


def label_encoder(task: CatalogueTask, separator: str):
    """A cell -> the shard's value: a class id, a sorted list of ids, a float, or None when missing."""
    ids = {label: index for index, label in enumerate(task.labels)}

    def items(value: Any) -> list[str]:
        if value is None:
            return []
        values = value if isinstance(value, (list, tuple)) else str(value).split(separator)
        return [text for text in (as_spark_text(item) for item in values if item is not None) if text]

    if task.type == "regression":
        return lambda value: None if value is None else float(value)
    if task.type == "classification":  # the whole cell is one label, as in the vocabulary (never split)

        def class_id(value: Any) -> int | None:
            text = "" if value is None else as_spark_text(value)
            return ids.get(text)  # None for an empty cell, or a label outside a fixed vocabulary

        return class_id

    def label_ids(labels: list[str]) -> list[int] | None:
        # A label outside a fixed vocabulary leaves the whole cell missing: the cell's other labels alone would
        # teach that this label is absent.
        return sorted({ids[item] for item in labels}) if all(item in ids for item in labels) else None

    if task.type == "multilabel" and task.from_array:
        return lambda value: None if value is None else label_ids(items(value))
    if task.empty == "missing":
        return lambda value: label_ids(items(value)) or None
    return lambda value: label_ids(items(value))


def as_spark_text(value: Any) -> str:
    # The vocabulary holds Spark's casts to string: booleans are "true" / "false" there.
    return ("true" if value else "false") if isinstance(value, bool) else str(value).strip()


__all__ = ["DROP_REASONS", "CatalogueTask", "ShardWriter", "as_spark_text", "label_encoder", "shard_schema"]
