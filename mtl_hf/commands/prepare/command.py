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

import math
from collections.abc import Sequence
from typing import Any

from ...errors import UserError
from ...utils.validation import structured_option
from ..parsing import CommandParser, user_errors_in_one_line
from .catalogue import (
    base_folder,
    catalogue_format,
    check_columns,
    parse_tasks,
    read_catalogue,
    spark_session,
    vocabulary,
)
from .shards import ShardWriter
from .storage import check_output
from .summary import format_summary, summarise

_ROW = "_mtl_hf_row"


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
    table_format = catalogue_format(catalogue)
    check_output(output, storage_options)
    own_session = spark is None
    spark = spark or spark_session(master)
    try:
        from pyspark.sql import functions as F

        table = read_catalogue(spark, catalogue, table_format)
        task_names = [name for name, _ in task_types]
        check_columns(table, image_column, task_names, catalogue)
        # Cached: the count, two small jobs per task and the photo job all read these columns, and the
        # catalogue file is then parsed once rather than once per job.
        table = table.select(F.monotonically_increasing_id().alias(_ROW), image_column, *task_names).cache()
        rows_in = table.count()
        if rows_in == 0:
            raise UserError(f"catalogue {catalogue} has no rows")
        catalogue_tasks = [vocabulary(table, name, kind, separator) for name, kind in task_types]

        shards = max(1, math.ceil(rows_in / shard_rows))
        ordered = table.repartitionByRange(shards, _ROW).sortWithinPartitions(_ROW)
        writer = ShardWriter(
            output=output,
            image_column=image_column,
            tasks=catalogue_tasks,
            base=base_folder(catalogue),
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
    return summarise(catalogue, output, rows_in, catalogue_tasks, reports, size, quality, storage_options)


def _check_settings(*, size: int, quality: int, shard_rows: int) -> None:
    if not isinstance(size, int) or size < 16:
        raise UserError(f"--size must be an integer of at least 16 (pixels of the shortest edge), got {size!r}")
    if not isinstance(quality, int) or not 1 <= quality <= 95:
        raise UserError(f"--quality must be a JPEG quality from 1 to 95, got {quality!r}")
    if not isinstance(shard_rows, int) or shard_rows < 1:
        raise UserError(f"--shard_rows must be a positive integer, got {shard_rows!r}")


def build_parser(prog: str = "mtl-hf prepare") -> CommandParser:
    parser = CommandParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("catalogue", help="the catalogue table: .csv (with a header), .parquet or .jsonl")
    parser.add_argument("output", help="a new folder (or fsspec URL) for the Parquet shards")
    parser.add_argument("--image_column", required=True, help="the column with each row's image path or URL")
    parser.add_argument(
        "--tasks",
        required=True,
        help="comma-separated attribute columns, each optionally name:type (classification, "
        "multilabel, regression), e.g. category,tags:multilabel,size",
    )
    parser.add_argument("--size", type=int, default=256, help="shortest edge of the stored photos (default: 256)")
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality of the stored photos (default: 90)")
    parser.add_argument("--shard_rows", type=int, default=5000, help="catalogue rows per shard (default: 5000)")
    parser.add_argument("--master", default="local[*]", help="the Spark master (default: local[*], all local cores)")
    parser.add_argument("--separator", default="|", help="separates the labels of a multilabel text cell (default: |)")
    parser.add_argument(
        "--storage_options",
        default=None,
        help="JSON fsspec options for image URLs and an output URL, e.g. "
        '\'{"client_kwargs": {"endpoint_url": "http://127.0.0.1:9000"}}\'',
    )
    return parser


def main(argv: Sequence[str] | None = None, prog: str = "mtl-hf prepare") -> dict[str, Any]:
    with user_errors_in_one_line(prog):
        args = build_parser(prog).parse_args(argv)
        summary = prepare_catalogue(
            args.catalogue,
            args.output,
            image_column=args.image_column,
            tasks=args.tasks,
            size=args.size,
            quality=args.quality,
            shard_rows=args.shard_rows,
            master=args.master,
            separator=args.separator,
            storage_options=structured_option("--storage_options", args.storage_options),
        )
    print(format_summary(summary))
    return summary


__all__ = ["build_parser", "main", "prepare_catalogue"]
