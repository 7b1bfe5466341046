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

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ...data.tables import DEFAULT_SPLITS, SPLIT_COLUMN, check_fractions, photo_location
from ...errors import MissingPathError, UserError
from ...utils.validation import comma_separated, structured_option
from ..parsing import CommandParser, user_errors_in_one_line
from .catalogue import (
    base_folder,
    catalogue_format,
    parse_tasks,
    read_catalogue,
    spark_session,
    vocabulary,
)
from .precheck import check_before_spark, require_columns
from .shards import ShardWriter
from .storage import check_output
from .summary import format_summary, summarise

_ROW = "_mtl_hf_row"
logger = logging.getLogger(__name__)


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
    id_columns: Sequence[str] | None = None,
    split_fractions: dict[str, float] | None = None,
    empty_missing: Sequence[str] = (),
    vocabulary_from: str | None = None,
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
        id_columns (`list[str]`, *optional*): columns kept, as text, in the shards and in `dropped_rows.jsonl`;
            the first gives each row its split. Default: every column that is neither a task nor the image,
            the rows then split by their image location.
        split_fractions (`dict`, *optional*): split -> share of the rows, by a stable hash of the row's id
            (default `{"train": 0.8, "validation": 0.1, "test": 0.1}`); a `split` column decides instead.
        empty_missing (`list[str]`, *optional*): multilabel tasks whose empty text cells mean "unknown"
            (missing) rather than "none of the labels" (the default, what a shop export means).
        vocabulary_from (`str`, *optional*): a saved model folder, or a JSON file `{task: [labels]}`, whose
            labels (and the model's task types) fix the vocabularies; a label outside them is counted per
            task and its cell left missing.
        storage_options (`dict`, *optional*): fsspec options for image URLs and an `output` URL
            (e.g. `{"key": ..., "secret": ..., "client_kwargs": {"endpoint_url": ...}}`).
        spark (`SparkSession`, *optional*): a session to use instead of starting one on `master`.
    """
    _check_settings(size=size, quality=quality, shard_rows=shard_rows)
    task_types = parse_tasks(tasks)
    task_names = [name for name, _ in task_types]
    fixed = fixed_vocabularies(vocabulary_from, task_names) if vocabulary_from else {}
    task_types = [(name, fixed[name][0] if name in fixed else kind) for name, kind in task_types]
    _check_empty_missing(empty_missing, task_types)
    fractions = check_fractions(split_fractions or DEFAULT_SPLITS)
    storage_options = dict(storage_options or {})
    table_format = catalogue_format(catalogue)
    named = [(image_column, "--image_column"), *((name, "--tasks") for name in task_names)]
    named += [(column, "--id_column") for column in id_columns or []]
    check_output(output, storage_options)
    check_before_spark(
        catalogue,
        table_format,
        image_column=image_column,
        columns_needed=named,
        regression_tasks=[name for name, kind in task_types if kind == "regression"],
    )
    own_session = spark is None
    spark = spark or spark_session(master)
    try:
        table, ids, has_split_column = _catalogue_table(
            spark,
            catalogue,
            table_format,
            named,
            image_column=image_column,
            task_names=task_names,
            id_columns=id_columns,
        )
        rows_in = table.count()
        if rows_in == 0:
            raise UserError(f"catalogue {catalogue} has no rows")
        catalogue_tasks = [
            vocabulary(
                table,
                name,
                kind,
                separator,
                empty="missing" if name in empty_missing else "none",
                fixed=fixed[name][1] if name in fixed else None,
            )
            for name, kind in task_types
        ]

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
            id_columns=tuple(column for column in ids if column not in (image_column, *task_names)),
            split_key=None if has_split_column else (ids[0] if id_columns else image_column),
            split_fractions=fractions,
        )
        reports = ordered.rdd.mapPartitionsWithIndex(writer.write_partition).collect()
        table.unpersist()
    finally:
        if own_session:
            spark.stop()
    split_rule = (
        f"by a hash of {writer.split_key!r}, {json.dumps(fractions)}"
        if writer.split_key
        else f"by the catalogue's {SPLIT_COLUMN!r} column"
    )
    summary = summarise(
        catalogue, output, rows_in, catalogue_tasks, reports, size, quality, storage_options, split_rule
    )
    if summary["rows_out"] == 0:
        raise UserError(every_row_dropped(summary, base_folder(catalogue)))
    return summary


def _catalogue_table(spark, catalogue: str, table_format: str, named, *, image_column, task_names, id_columns):
    """(the rows Spark reads: a row number, the photo, the tasks, the id and split columns as text; the id
    columns; whether the catalogue has a split column). `named`: the columns the flags name, checked here too,
    since a catalogue in object storage is not read before Spark."""
    from pyspark.sql import functions as F

    table = read_catalogue(spark, catalogue, table_format)
    require_columns(catalogue, table.columns, named)
    ids = list(id_columns) if id_columns is not None else _other_columns(table, image_column, task_names)
    has_split_column = SPLIT_COLUMN in table.columns
    kept = [column for column in [*ids, *([SPLIT_COLUMN] if has_split_column else [])] if column not in task_names]
    # Cached: the count, two small jobs per task and the photo job all read these columns, and the
    # catalogue file is then parsed once rather than once per job.
    table = table.select(
        F.monotonically_increasing_id().alias(_ROW),
        image_column,
        *task_names,
        *(F.col(column).cast("string").alias(column) for column in dict.fromkeys(kept) if column != image_column),
    ).cache()
    return table, ids, has_split_column


def fixed_vocabularies(source: str, task_names: list[str]) -> dict[str, tuple[str, list[str]]]:
    """task -> (type, labels) from a saved model's config.json or a JSON file `{task: [labels]}`."""
    path = Path(source)
    config_file = path / "config.json" if path.is_dir() else path
    if not config_file.is_file():
        raise MissingPathError(f"--vocabulary_from {source}: no model folder (with config.json) or JSON file there")
    try:
        values = json.loads(config_file.read_text())
    except json.JSONDecodeError as error:
        raise UserError(f"--vocabulary_from {config_file} is not JSON: {error}") from None
    if path.is_dir():
        vocabularies = {
            task["name"]: (task["type"], list(task["labels"])) for task in values.get("tasks", []) if task.get("labels")
        }
    elif isinstance(values, dict) and all(isinstance(v, list) for v in values.values()):
        vocabularies = {name: (None, [str(label) for label in labels]) for name, labels in values.items()}
    else:
        raise UserError(f"--vocabulary_from {source}: give a JSON object task -> list of labels")
    unknown = sorted(set(vocabularies) - set(task_names))
    known = {name: value for name, value in vocabularies.items() if name in task_names}
    if not known:
        raise UserError(
            f"--vocabulary_from {source} has labels for {sorted(vocabularies)}, none of --tasks {task_names}"
        )
    if unknown:
        logger.info("--vocabulary_from: %s not among --tasks; ignored", unknown)
    return known


def every_row_dropped(summary: dict[str, Any], base: str) -> str:
    reasons = ", ".join(f"{count} {reason}" for reason, count in summary["dropped"].items())
    first = summary.get("first_dropped") or {}
    example = photo_location(first.get("image"), base)
    where = f"; e.g. {example}" if example else ""
    return (
        f"every one of the {summary['rows_in']} rows was dropped ({reasons}){where}: relative photo paths are read "
        f"from the catalogue's folder {base or '(a URL)'}; see {summary['output']}/dropped_rows.jsonl"
    )


def _other_columns(table, image_column: str, task_names: list[str]) -> list[str]:
    return [column for column in table.columns if column not in (image_column, *task_names, SPLIT_COLUMN)]


def _check_empty_missing(empty_missing: Sequence[str], task_types) -> None:
    types = dict(task_types)
    for name in empty_missing:
        if name not in types:
            raise UserError(f"--empty_missing names {name!r}, which is not among --tasks {list(types)}")
        if types[name] not in (None, "multilabel"):
            raise UserError(f"--empty_missing {name}: only a multilabel task's empty cells can mean none or missing")


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
        "--id_column",
        action="append",
        dest="id_columns",
        help="a column kept in the shards and in dropped_rows.jsonl (repeat for more); the first gives each row "
        "its split (default: every column that is neither a task nor the image, rows split by image path)",
    )
    parser.add_argument(
        "--split_fractions",
        help='JSON split -> share of the rows, by a stable hash of the row id (default: {"train": 0.8, '
        '"validation": 0.1, "test": 0.1}); a split column in the catalogue decides instead',
    )
    parser.add_argument(
        "--empty_missing",
        default="",
        help="comma-separated multilabel tasks whose empty cells mean unknown (default: none of the labels)",
    )
    parser.add_argument(
        "--vocabulary_from",
        help="a saved model folder or a JSON file {task: [labels]} that fixes the tasks' labels (a label outside "
        "them is counted and left missing): new data encoded with the ids a model was trained with",
    )
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
            id_columns=args.id_columns,
            split_fractions=structured_option("--split_fractions", args.split_fractions),
            empty_missing=comma_separated(args.empty_missing),
            vocabulary_from=args.vocabulary_from,
            storage_options=structured_option("--storage_options", args.storage_options),
        )
    print(format_summary(summary))
    return summary


__all__ = ["build_parser", "main", "prepare_catalogue"]
