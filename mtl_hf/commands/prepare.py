"""`mtl-hf prepare`: a product catalogue whose rows point to photos -> training-ready Parquet shards, on Spark.

    mtl-hf prepare CATALOGUE OUTPUT --image_column path --tasks category,colour,tags:multilabel,size \
        [--size 256] [--quality 90] [--shard_rows 5000] [--master local[*]]

The catalogue is a table (CSV with a header, Parquet, or JSON lines) with one row per product: a
column of image locations (local paths, relative to the catalogue's folder or absolute, or any
fsspec URL such as `s3://shop/photos/1.jpg`) and one column per attribute. Spark does the work:

1. label vocabularies, one per task: the distinct values, sorted (empty cells stay missing);
2. the photos, shard by shard on the executors: read, decoded (JPEGs in draft mode), checked,
   shrunk so that the shortest edge is `size` (smaller photos are kept as they are), re-encoded as
   JPEG at `quality`, and written with their labels as one Parquet file per Spark partition. A photo
   that cannot be read or decoded drops its row, counted by reason and listed in
   `dropped_rows.jsonl`; it never stops the job.

On a cluster the executors need mtl_hf installed and must reach the photos (URLs, or paths on a
shared file system) and the output (a URL or a shared folder).

The shards carry the `datasets` features in their schema (`Image`, `ClassLabel`, lists of
`ClassLabel`, `float32`), so `TaskSource(OUTPUT, tasks)` and `load_dataset("parquet", ...)` read
them with their label names, map-style or streaming. `prepare_summary.json` (also printed) says
what came in, what went out, what was dropped and why, and each task's labels.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import re
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TASK_TYPES = ("classification", "multilabel", "regression")
SUMMARY_FILE = "prepare_summary.json"
DROPPED_FILE = "dropped_rows.jsonl"
INSTALL_HINT = "pip install 'mtl_hf[spark]' (Spark also needs Java 17 or newer)"
_ROW = "_mtl_hf_row"

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


def parse_tasks(spec: str | Sequence[str]) -> list[tuple[str, str | None]]:
    """`"category,tags:multilabel,size:regression"` -> `[("category", None), ("tags", "multilabel"), ...]`."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    tasks = []
    for item in (item.strip() for item in items):
        name, _, kind = item.partition(":")
        if not name:
            raise ValueError(
                f"--tasks {spec!r}: an empty task name; give comma-separated columns, e.g. category,colour"
            )
        if kind and kind not in TASK_TYPES:
            raise ValueError(f"--tasks: task {name!r} has type {kind!r}; use one of {', '.join(TASK_TYPES)}")
        tasks.append((name, kind or None))
    duplicated = [name for name, count in Counter(name for name, _ in tasks).items() if count > 1]
    if duplicated:
        raise ValueError(f"--tasks names {duplicated[0]!r} twice")
    return tasks


def spark_session(master: str):
    """A SparkSession on `master` whose Python workers run this interpreter (they need pyarrow and PIL)."""
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise ImportError(f"mtl-hf prepare runs on Spark, which is not installed: {INSTALL_HINT}") from None
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = SparkSession.builder
    if master.startswith("local"):
        builder = builder.config("spark.driver.host", "127.0.0.1").config("spark.driver.bindAddress", "127.0.0.1")
    return (
        builder.master(master)
        .appName("mtl-hf prepare")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", "8")
        .getOrCreate()
    )


def prepare_catalogue(
    catalogue: str,
    output: str,
    *,
    image_column: str,
    tasks: str | Sequence[str],
    size: int = 256,
    quality: int = 90,
    shard_rows: int = 5000,
    master: str = "local[*]",
    separator: str = "|",
    storage_options: dict[str, Any] | None = None,
    spark=None,
) -> dict[str, Any]:
    r"""
    Prepares a catalogue on Spark (see the module's docstring) and returns the summary it writes.

    Args:
        catalogue (`str`): the catalogue table: a `.csv` (with a header), `.parquet` (file or folder)
            or `.jsonl` / `.json` (JSON lines) path.
        output (`str`): an empty or new folder (or fsspec URL) for the shards and the summary.
        image_column (`str`): the column with each row's image location.
        tasks (`str` or `list[str]`): the attribute columns, as `name` or `name:type`; without a type,
            string / integer / boolean columns are classification, arrays multilabel, floats regression.
        size (`int`, defaults to 256): the stored photos' shortest edge, in pixels.
        quality (`int`, defaults to 90): the JPEG quality of the stored photos.
        shard_rows (`int`, defaults to 5000): catalogue rows per shard (fewer come out where rows drop).
        master (`str`, defaults to `"local[*]"`): the Spark master (`local[2]`, `spark://host:7077`, ...).
        separator (`str`, defaults to `"|"`): what separates a multilabel cell's labels in a text column.
        storage_options (`dict`, *optional*): fsspec options for image URLs and an `output` URL
            (e.g. `{"key": ..., "secret": ..., "client_kwargs": {"endpoint_url": ...}}`).
        spark (`SparkSession`, *optional*): a session to use instead of starting one on `master`.
    """
    _check_settings(size=size, quality=quality, shard_rows=shard_rows)
    task_types = parse_tasks(tasks)
    storage_options = dict(storage_options or {})
    table_format = _catalogue_format(catalogue)
    _check_output(output, storage_options)
    own_session = spark is None
    spark = spark or spark_session(master)
    try:
        from pyspark.sql import functions as F

        table = _read_catalogue(spark, catalogue, table_format)
        task_names = [name for name, _ in task_types]
        _check_columns(table, image_column, task_names, catalogue)
        # Cached: the count, two small jobs per task and the photo job all read these columns, and the
        # catalogue file is then parsed once rather than once per job.
        table = table.select(F.monotonically_increasing_id().alias(_ROW), image_column, *task_names).cache()
        rows_in = table.count()
        if rows_in == 0:
            raise ValueError(f"catalogue {catalogue} has no rows")
        catalogue_tasks = [_vocabulary(table, name, kind, separator) for name, kind in task_types]

        shards = max(1, math.ceil(rows_in / shard_rows))
        ordered = table.repartitionByRange(shards, _ROW).sortWithinPartitions(_ROW)
        writer = _ShardWriter(
            output=output,
            image_column=image_column,
            tasks=catalogue_tasks,
            base=_base_folder(catalogue),
            size=size,
            quality=quality,
            separator=separator,
            shards=shards,
            storage_options=storage_options,
        )
        reports = ordered.rdd.mapPartitionsWithIndex(writer.write_partition).collect()
        table.unpersist()
    finally:
        if own_session:
            spark.stop()
    return _summarise(catalogue, output, rows_in, catalogue_tasks, reports, size, quality, storage_options)


def _check_settings(*, size: int, quality: int, shard_rows: int) -> None:
    if not isinstance(size, int) or size < 16:
        raise ValueError(f"--size must be an integer of at least 16 (pixels of the shortest edge), got {size!r}")
    if not isinstance(quality, int) or not 1 <= quality <= 95:
        raise ValueError(f"--quality must be a JPEG quality from 1 to 95, got {quality!r}")
    if not isinstance(shard_rows, int) or shard_rows < 1:
        raise ValueError(f"--shard_rows must be a positive integer, got {shard_rows!r}")


def _filesystem(location: str, storage_options: dict[str, Any]):
    import fsspec

    protocol = fsspec.utils.get_protocol(location)
    return fsspec.core.url_to_fs(location, **(storage_options if protocol not in ("file", "local") else {}))


def _open_in(folder: str, name: str, mode: str, storage_options: dict[str, Any]):
    """File `name` in `folder` (a local path or a URL), the folder created first where that means anything."""
    fs, root = _filesystem(folder, storage_options)
    fs.makedirs(root, exist_ok=True)
    return fs.open(f"{root.rstrip('/')}/{name}", mode)


def _check_output(output: str, storage_options: dict[str, Any]) -> None:
    """Before Spark starts: the output is new or an empty folder, and in object storage its bucket exists."""
    fs, root = _filesystem(output, storage_options)
    if fs.exists(root) and (not fs.isdir(root) or fs.ls(root)):
        raise FileExistsError(f"{output} already exists and is not an empty folder; give a new output folder "
                              "(nothing there was changed)")  # fmt: skip
    bucket = root.strip("/").split("/")[0]  # object stores have buckets, not folders, to create first
    if "://" in output and not fs.exists(bucket):
        raise FileNotFoundError(f"{output}: {bucket} does not exist; create it first (a bucket is not created "
                                "for you)")  # fmt: skip


def _catalogue_format(catalogue: str) -> str:
    """`csv`, `parquet` or `json`, checked before Spark starts (which takes seconds)."""
    path = Path(catalogue)
    if "://" not in catalogue and not path.exists():
        raise FileNotFoundError(f"no catalogue at {catalogue}")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix == ".parquet" or (path.is_dir() and any(path.glob("*.parquet"))):
        return "parquet"
    if suffix in (".jsonl", ".json", ".ndjson"):
        return "json"
    raise ValueError(f"catalogue {catalogue}: unknown table format {suffix or '(no suffix)'!r}; "
                     "give a .csv (with a header), .parquet or .jsonl file")  # fmt: skip


def _read_catalogue(spark, catalogue: str, table_format: str):
    if table_format == "csv":
        return spark.read.csv(catalogue, header=True, inferSchema=True, escape='"', multiLine=False)
    return spark.read.parquet(catalogue) if table_format == "parquet" else spark.read.json(catalogue)


def _check_columns(table, image_column: str, task_names: list[str], catalogue: str) -> None:
    missing = [column for column in [image_column, *task_names] if column not in table.columns]
    if missing:
        flag = "--image_column" if missing[0] == image_column else "--tasks"
        raise ValueError(f"catalogue {catalogue} has no column {missing[0]!r} (from {flag}); its columns are "
                         f"{table.columns}")  # fmt: skip


def _vocabulary(table, name: str, kind: str | None, separator: str) -> CatalogueTask:
    """The task's type (given or from the column's Spark type), its sorted labels and its missing count."""
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
    column = F.col(name)
    if kind == "regression":
        if isinstance(data_type, (T.ArrayType, T.MapType, T.StructType)):
            raise ValueError(f"--tasks: column {name!r} holds {data_type.simpleString()}, not numbers; "
                             "a regression task needs one number per row")  # fmt: skip
        number = column.try_cast("double")  # null where the text is not a number (Spark 4 casts strictly)
        counts = table.agg(
            F.sum(column.isNull().cast("long")).alias("missing"),
            F.sum((column.isNotNull() & number.isNull()).cast("long")).alias("bad"),
            F.first(F.when(column.isNotNull() & number.isNull(), column.cast("string")), ignorenulls=True).alias("ex"),
        ).first()
        if counts["bad"]:
            raise ValueError(f"--tasks: regression column {name!r} has {counts['bad']} values that are not numbers, "
                             f"e.g. {counts['ex']!r}; clean them or give the task another type")  # fmt: skip
        return CatalogueTask(name=name, type=kind, missing=int(counts["missing"] or 0))
    items = _label_items(column, data_type, kind, separator)
    labels = sorted(row[0] for row in table.select(F.explode(items).alias("label")).distinct().collect())
    # An array column says "none of the labels" with [] and "unknown" with null; a text cell has only "".
    missing = table.where(column.isNull() if isinstance(data_type, T.ArrayType) else F.size(items) == 0).count()
    if not labels:
        raise ValueError(f"--tasks: column {name!r} has no labels at all (every row is empty)")
    return CatalogueTask(name=name, type=kind, labels=tuple(labels), missing=missing,
                         from_array=isinstance(data_type, T.ArrayType))  # fmt: skip


def _label_items(column, data_type, kind: str, separator: str):
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


def _base_folder(catalogue: str) -> str:
    return "" if "://" in catalogue else str(Path(catalogue).resolve().parent)


@dataclass(frozen=True)
class _ShardWriter:
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

        encoders = {task.name: _label_encoder(task, self.separator) for task in self.tasks}
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
            with _open_in(self.output, name, "wb", self.storage_options) as file:
                pq.write_table(table, file)
                report.update(file=name, bytes=file.tell())  # the file's size, without asking the store
        yield report

    def _photo(self, location: Any) -> tuple[bytes | None, str | None]:
        """The stored JPEG bytes of the photo at `location`, or why there are none."""
        from PIL import Image, UnidentifiedImageError

        from ..data.transforms import to_rgb

        if location is None or not str(location).strip():
            return None, "no_image_path"
        location = str(location).strip()
        if "://" not in location and not os.path.isabs(location) and self.base:
            location = os.path.join(self.base, location)
        try:
            fs, path = _filesystem(location, self.storage_options)
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


def _label_encoder(task: CatalogueTask, separator: str):
    """A cell -> the shard's value: a class id, a sorted list of ids, a float, or None when missing."""
    ids = {label: index for index, label in enumerate(task.labels)}

    def items(value: Any) -> list[str]:
        if value is None:
            return []
        values = value if isinstance(value, (list, tuple)) else str(value).split(separator)
        return [text for text in (_as_spark_text(item) for item in values if item is not None) if text]

    if task.type == "regression":
        return lambda value: None if value is None else float(value)
    if task.type == "classification":  # the whole cell is one label, as in the vocabulary (never split)

        def class_id(value: Any) -> int | None:
            text = "" if value is None else _as_spark_text(value)
            return ids[text] if text else None

        return class_id
    if task.type == "multilabel" and task.from_array:
        return lambda value: None if value is None else sorted({ids[item] for item in items(value)})
    return lambda value: sorted({ids[item] for item in items(value)}) or None


def _as_spark_text(value: Any) -> str:
    # The vocabulary holds Spark's casts to string: booleans are "true" / "false" there.
    return ("true" if value else "false") if isinstance(value, bool) else str(value).strip()


def _summarise(catalogue, output, rows_in, tasks, reports, size, quality, storage_options) -> dict[str, Any]:
    reports = sorted(reports, key=lambda report: report["partition"])
    dropped_rows = [row for report in reports for row in report["dropped"]]
    summary = {
        "catalogue": str(catalogue),
        "output": str(output),
        "rows_in": rows_in,
        "rows_out": sum(report["rows_out"] for report in reports),
        "dropped": dict(sorted(Counter(row["reason"] for row in dropped_rows).items())),
        "tasks": {
            task.name: {"type": task.type, "labels": list(task.labels), "missing": task.missing} for task in tasks
        },
        "shards": [{"file": r["file"], "rows": r["rows_out"], "bytes": r["bytes"]} for r in reports if "file" in r],
        "image_shortest_edge": size,
        "jpeg_quality": quality,
    }
    with _open_in(output, SUMMARY_FILE, "w", storage_options) as file:
        json.dump(summary, file, indent=2)
    with _open_in(output, DROPPED_FILE, "w", storage_options) as file:
        file.writelines(json.dumps(row) + "\n" for row in dropped_rows)
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    shard_bytes = [shard["bytes"] for shard in summary["shards"]]
    lines = [
        f"catalogue {summary['catalogue']} -> {summary['output']}",
        f"rows: {summary['rows_in']} in, {summary['rows_out']} out, {summary['rows_in'] - summary['rows_out']} dropped",
    ]
    for reason, count in summary["dropped"].items():
        lines.append(f"  dropped {count:>6}  {reason}: {DROP_REASONS[reason]}")
    for name, task in summary["tasks"].items():
        labels = f"{len(task['labels'])} labels {task['labels'][:8]}{' ...' if len(task['labels']) > 8 else ''}"
        lines.append(f"task {name} ({task['type']}): {labels if task['labels'] else 'numbers'}, "
                     f"{task['missing']} rows missing")  # fmt: skip
    if shard_bytes:
        mib = [count / 2**20 for count in shard_bytes]
        lines.append(f"shards: {len(mib)} Parquet files, {sum(mib):.1f} MiB ({min(mib):.1f}-{max(mib):.1f} MiB each); "
                     f"photos at {summary['image_shortest_edge']} px shortest edge, JPEG quality "
                     f"{summary['jpeg_quality']}")  # fmt: skip
    lines.append(f"summary: {SUMMARY_FILE}, dropped rows: {DROPPED_FILE} (in the output folder)")
    return "\n".join(lines)


def build_parser(prog: str = "mtl-hf prepare") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("catalogue", help="the catalogue table: .csv (with a header), .parquet or .jsonl")
    parser.add_argument("output", help="a new folder (or fsspec URL) for the Parquet shards")
    parser.add_argument("--image_column", required=True, help="the column with each row's image path or URL")
    parser.add_argument("--tasks", required=True,
                        help="comma-separated attribute columns, each optionally name:type (classification, "
                             "multilabel, regression), e.g. category,tags:multilabel,size")  # fmt: skip
    parser.add_argument("--size", type=int, default=256, help="shortest edge of the stored photos (default: 256)")
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality of the stored photos (default: 90)")
    parser.add_argument("--shard_rows", type=int, default=5000, help="catalogue rows per shard (default: 5000)")
    parser.add_argument("--master", default="local[*]", help="the Spark master (default: local[*], all local cores)")
    parser.add_argument("--separator", default="|", help="separates the labels of a multilabel text cell (default: |)")
    parser.add_argument("--storage_options", default=None,
                        help="JSON fsspec options for image URLs and an output URL, e.g. "
                             '\'{"client_kwargs": {"endpoint_url": "http://127.0.0.1:9000"}}\'')  # fmt: skip
    return parser


def _json_object(flag: str, text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{flag} is not JSON ({error.msg} at character {error.pos}): {text!r}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{flag} must be a JSON object {{...}}, got {text!r}")
    return value


def main(argv: Sequence[str] | None = None, prog: str = "mtl-hf prepare") -> dict[str, Any]:
    args = build_parser(prog).parse_args(argv)
    summary = prepare_catalogue(
        args.catalogue, args.output, image_column=args.image_column, tasks=args.tasks, size=args.size,
        quality=args.quality, shard_rows=args.shard_rows, master=args.master, separator=args.separator,
        storage_options=_json_object("--storage_options", args.storage_options),
    )  # fmt: skip
    print(format_summary(summary))
    return summary


__all__ = ["DROP_REASONS", "CatalogueTask", "format_summary", "main", "parse_tasks", "prepare_catalogue"]
