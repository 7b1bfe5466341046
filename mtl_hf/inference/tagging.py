"""Tagging a whole catalogue: a saved model over every photo, written as Parquet shards that a rerun resumes.

    OUT/predictions/part-00000.parquet   the input's columns (the image column as its path), then each task's
                                         answers (`inference/answers.py`); one file per input shard
    OUT/bad_images.jsonl                 each photo that could not be decoded: shard, row, error type, message
    OUT/predict_summary.json             rows in and out, rows dropped by reason, images/s
    OUT/_progress/                       the run's fingerprint and each finished shard's record

The model is loaded once per process (`tagger.py`); the output folder's resume protocol (`shard_store.py`) keeps
only shards written whole, so a run killed at any point is resumed by a rerun, whose rows are those of an
uninterrupted run. An output folder that holds a run of another model, input, options or engine is refused.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from functools import partial
from pathlib import Path
from typing import Any

from .answers import check_thresholds
from .fingerprints import fingerprint, model_fingerprint
from .inputs import InputShard, check_image_column, input_shards
from .shard_store import OutputFolder
from .tagger import Tagger, TaggerSpec, TaggingOptions, check_model_folder, kept_columns

logger = logging.getLogger(__name__)


def tag_catalogue(
    model: str,
    source: str,
    output: str,
    options: TaggingOptions,
    *,
    allow_pickled_weights: bool = False,
    engine: str = "torch",
    master: str | None = None,
    dtype: str = "auto",
) -> dict[str, Any]:
    """Tags every photo of `source` with the saved `model`, into `output` (see the module); returns the summary.

    With `master` (a Spark master URL, e.g. `local[4]`), the shards are tagged on Spark's executors, one task per
    shard, each Python worker loading the model once: the executors need mtl_hf and read `model`, `source` and
    `output` at the same paths (shared or object storage). The files written are those of a run without Spark.
    """
    shards = input_shards(
        source,
        image_column=options.image_column,
        shard_rows=options.shard_rows,
        storage_options=options.storage_options,
        hash_photos=options.hash_photos,
    )
    from ..models.mtl_vit.configuration_mtl_vit import MultiTaskViTConfig

    if not Path(model).is_dir():  # a Hub id: its files, once, in the Hub cache
        from huggingface_hub import snapshot_download

        model = snapshot_download(model)
    specs = MultiTaskViTConfig.from_pretrained(model).task_specs
    options.thresholds = check_thresholds(options.thresholds, specs)
    # Before anything is written: the first shard's columns are checked (the image column, the kept ones).
    first = shards[0]
    columns = first.columns()
    check_image_column(columns, first.image_column or options.image_column, f"{source} ({first.origin})")
    kept_columns(columns, options, specs)
    run = {
        "model": model_fingerprint(Path(model)),
        "input": [shard.origin for shard in shards],
        "options": options.recorded(),
        "engine": engine,
    }
    if dtype != "auto":  # answers at another precision are not the same run's (runs from before keep theirs)
        run["dtype"] = dtype
    run["fingerprint"] = fingerprint(run)
    out = OutputFolder(output, options.storage_options)
    out.check(run)  # before the weights load: a refusal comes at once, and a failed load leaves no claim
    check_model_folder(str(model), engine, dtype)
    loading = TaggerSpec(str(model), engine, allow_pickled_weights, dtype)
    if master is None:
        tagger = loading.load()
    else:
        from ..utils.spark import spark_session

        spark = spark_session(master, app_name="mtl-hf predict")
    out.claim({**run, "model_location": str(model), "source": source})
    pending = [shard for shard in shards if not out.finished(shard.name)]
    started = time.perf_counter()
    if master is None:
        records = [tag_shard(tagger, shard, options, out) for shard in pending]
    else:
        # One Spark task per shard; each Python worker loads the model once and writes its shards itself.
        work = partial(_tag_shard_on_executor, loading, options, output)
        records = spark.sparkContext.parallelize(pending, numSlices=max(1, len(pending))).map(work).collect()
    images = sum(record["rows_in"] for record in records)
    elapsed = time.perf_counter() - started
    records = list(out.records(shards))
    broken = [row for record in records for row in record["bad_images"]]
    summary = {
        "model": str(model),
        "source": source,
        "fingerprint": run["fingerprint"],
        "shards": len(shards),
        "shards_resumed": len(shards) - len(pending),
        "rows_in": sum(record["rows_in"] for record in records),
        "rows_out": sum(record["rows_out"] for record in records),
        "dropped_by_reason": dict(Counter(row["error"] for row in broken)),
        "images_per_second": images / elapsed if images else None,  # this run's shards only
        "seconds": elapsed,
    }
    out.write_summary(summary, broken)
    return summary


def tag_shard(tagger: Tagger, shard: InputShard, options: TaggingOptions, out: OutputFolder) -> dict[str, Any]:
    """Tags one input shard and writes its output (temporary name, then renamed); returns its record."""
    started = time.perf_counter()
    table = shard.read()
    answers, broken = tagger.tag(
        table,
        options,
        image_column=shard.image_column or options.image_column,
        base_folder=shard.base_folder,
        shard=shard.name,
    )
    seconds = time.perf_counter() - started
    record = {
        "shard": shard.name,
        "origin": shard.origin,
        "rows_in": table.num_rows,
        "rows_out": answers.num_rows,
        "bad_images": broken,
        "seconds": seconds,
    }
    out.write_shard(shard.name, answers, record)
    logger.info(
        "%s: %d rows, %d broken photos, %.1f images/s",
        shard.name,
        table.num_rows,
        len(broken),
        table.num_rows / max(seconds, 1e-9),
    )
    return record


_LOADED: dict[TaggerSpec, Tagger] = {}  # per Python process: a Spark worker keeps its model between tasks


def _tag_shard_on_executor(spec: TaggerSpec, options: TaggingOptions, output: str, shard: InputShard) -> dict:
    if spec not in _LOADED:
        _LOADED[spec] = spec.load()
    return tag_shard(_LOADED[spec], shard, options, OutputFolder(output, options.storage_options))


__all__ = ["TaggingOptions", "tag_catalogue", "tag_shard"]
