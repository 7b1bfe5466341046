"""The code that runs on Spark's executors: each partition of the catalogue becomes one Parquet shard.

Every photo is read (local path or URL), decoded (JPEGs in draft mode), checked, shrunk to the
shortest edge `size` and re-encoded as JPEG; its row's cells become the task's values (class ids,
sorted id lists, floats or None). A photo that cannot be read or decoded drops its row with a reason
(`DROP_REASONS`); it never stops the job. This module imports no Spark: executors unpickle
`ShardWriter` and call `write_partition`.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ...data.images import to_rgb
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

    def write_partition(self, index: int, rows: Iterator) -> Iterator[dict[str, Any]]:
        import pyarrow as pa
        import pyarrow.parquet as pq
        from datasets import Features
        from datasets import Image as ImageFeature

        encoders = {task.name: label_encoder(task, self.separator) for task in self.tasks}
        columns: dict[str, list] = {"image": [], **{task.name: [] for task in self.tasks}}
        dropped: list[dict[str, str]] = []
        rows_in = 0
        for row in rows:
            rows_in += 1
            location = row[self.image_column]
            photo, reason = self._photo(location)
            if reason is not None:
                dropped.append({"image": None if location is None else str(location), "reason": reason})
                continue
            columns["image"].append({"bytes": photo, "path": str(location)})
            for task in self.tasks:
                columns[task.name].append(encoders[task.name](row[task.name]))
        report = {"partition": index, "rows_in": rows_in, "rows_out": len(columns["image"]), "dropped": dropped}
        if columns["image"]:
            features = Features({"image": ImageFeature(), **{task.name: task.feature() for task in self.tasks}})
            table = pa.Table.from_pydict(columns, schema=features.arrow_schema)
            name = f"train-{index:05d}-of-{self.shards:05d}.parquet"
            with open_in(self.output, name, "wb", self.storage_options) as file:
                pq.write_table(table, file)
                report.update(file=name, bytes=file.tell())  # the file's size, without asking the store
        yield report

    def _photo(self, location: Any) -> tuple[bytes | None, str | None]:
        """The stored JPEG bytes of the photo at `location`, or why there are none."""
        from PIL import Image, UnidentifiedImageError

        if location is None or not str(location).strip():
            return None, "no_image_path"
        location = str(location).strip()
        if "://" not in location and not os.path.isabs(location) and self.base:
            location = os.path.join(self.base, location)
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
            return ids[text] if text else None

        return class_id
    if task.type == "multilabel" and task.from_array:
        return lambda value: None if value is None else sorted({ids[item] for item in items(value)})
    return lambda value: sorted({ids[item] for item in items(value)}) or None


def as_spark_text(value: Any) -> str:
    # The vocabulary holds Spark's casts to string: booleans are "true" / "false" there.
    return ("true" if value else "false") if isinstance(value, bool) else str(value).strip()


__all__ = ["DROP_REASONS", "CatalogueTask", "ShardWriter", "as_spark_text", "label_encoder"]
