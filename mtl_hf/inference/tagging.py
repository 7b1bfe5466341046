"""Tagging a whole catalogue: a saved model over every photo, written as Parquet shards that a rerun resumes.

    OUT/predictions/part-00000.parquet   the input's columns (the image column as its path), then each task's
                                         answers (`inference/answers.py`); one file per input shard
    OUT/bad_images.jsonl                 each photo that could not be decoded: shard, row, error type, message
    OUT/predict_summary.json             rows in and out, rows dropped by reason, images/s
    OUT/_progress/run.json               the run's fingerprint (model, input, options)
    OUT/_progress/part-00000.json        a finished shard's counts and broken photos

A shard is written under a temporary name and renamed when complete, so a run killed at any point leaves only
finished shards, which a rerun skips; the rerun's rows are those of an uninterrupted run. An output folder that
holds a run of another model, input or options is refused.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from ..data.collator import MultiTaskCollator
from ..data.sources import RawExample
from ..data.transforms import ImageTransforms
from ..errors import OutputExistsError, UserError
from ..utils.validation import check_choice
from .answers import answer_columns, check_thresholds
from .batches import RowBatch, inference_loader, padding_pixels, run_batches
from .inputs import InputShard, check_image_column, fingerprint, image_location, image_reference, input_shards

logger = logging.getLogger(__name__)

PREDICTIONS, PROGRESS = "predictions", "_progress"
ENGINES = ("torch", "onnx")
SUMMARY_FILE, BAD_IMAGES_FILE = "predict_summary.json", "bad_images.jsonl"


@dataclass
class TaggingOptions:
    """How `tag_catalogue` reads the catalogue and what it writes.

    Args:
        image_column: the input table's column of photos (a folder of images has one, `image`).
        keep_columns: the input columns copied to the output (default: all of them).
        top_k: labels in each `{task}_scores`.
        thresholds: per multilabel task, the score from which a label is in `{task}` (default 0.5).
        batch_size: images per forward.
        num_workers: DataLoader workers decoding photos (0: in the main process).
        shard_rows: rows per input shard, for inputs that are not already Parquet shards.
        storage_options: fsspec options for object storage (input, photos and output).
    """

    image_column: str = "image"
    keep_columns: list[str] | None = None
    top_k: int = 3
    thresholds: dict[str, float] = field(default_factory=dict)
    batch_size: int = 64
    num_workers: int = 0
    shard_rows: int = 10_000
    storage_options: dict[str, Any] = field(default_factory=dict)

    def recorded(self) -> dict[str, Any]:
        """What decides the output's rows (for the run's fingerprint): not speed settings, nor credentials."""
        return {
            key: value
            for key, value in asdict(self).items()
            if key in ("image_column", "keep_columns", "top_k", "thresholds")
        }


def check_model_folder(model: str, engine: str) -> None:
    """What a tagger needs of the model folder, checked where it is named (on Spark's driver, before any executor
    tries): an image processor, and for the ONNX engine onnxruntime and the exported graph."""
    check_choice("engine", engine, ENGINES)
    if not (Path(model) / "preprocessor_config.json").is_file():
        raise UserError(
            f"{model} has no image processor (preprocessor_config.json), so how photos were prepared in training "
            "is unknown: save it with the model (MultiTaskTrainer.save_model does, given processing_class) or "
            "copy the backbone's"
        )
    if engine == "onnx":
        from .onnx_export import OnnxModel

        OnnxModel.check(model)


class Tagger:
    """A saved model loaded once (per process, per Spark executor), with its image processor's eval transform,
    turning a table of photos into a table of answers."""

    def __init__(
        self, model: str, *, allow_pickled_weights: bool = False, device: str | None = None, engine: str = "torch"
    ):
        from transformers import AutoImageProcessor

        from ..models.mtl_vit.configuration_mtl_vit import MultiTaskViTConfig
        from ..models.mtl_vit.modeling_mtl_vit import MultiTaskViTModel

        check_model_folder(model, engine)
        if engine == "onnx":  # ONNX Runtime on the CPU, from an `mtl-hf export` folder
            from .onnx_export import OnnxModel

            self.device = torch.device("cpu")
            self.model = OnnxModel(model)
        else:
            self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
            self.model = MultiTaskViTModel.from_pretrained(model, allow_pickled_weights=allow_pickled_weights)
            self.model.to(self.device).eval()
        processor = AutoImageProcessor.from_pretrained(model)
        self.transform = ImageTransforms.from_image_processor(processor).eval()
        self.padding = padding_pixels(self.transform)
        # The ONNX engine has no PyTorch model whose config to ask.
        config = MultiTaskViTConfig.from_pretrained(model) if engine == "onnx" else self.model.config
        self.specs = config.task_specs

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 where the accelerator has it; full precision on the CPU."""
        if self.device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def tag(self, table: pa.Table, options: TaggingOptions, *, image_column: str, base_folder: str | None, shard: str):
        """(answers, broken photos): the rows of `table` whose photo decoded, with their kept columns and each
        task's answers, and `[{"shard", "row", "image", "error", "message"}]` for the others."""
        check_image_column(table.column_names, image_column, f"shard {shard}")
        cells = table.column(image_column).to_pylist()
        examples = [
            RawExample(
                image=image_location(cell, base_folder, options.storage_options),
                labels={},
                source=shard,
                row=row,
                skip_if_undecodable=True,
            )
            for row, cell in enumerate(cells)
        ]
        size = options.batch_size
        batches = (
            RowBatch(examples[s : s + size], list(range(s, min(s + size, len(examples)))))
            for s in range(0, len(examples), size)
        )
        loader = inference_loader(
            batches,
            MultiTaskCollator([], self.transform, for_inference=True),
            num_workers=options.num_workers,
            pin_memory=self.device.type == "cuda",
        )
        positions, logits, broken = [], {spec.name: [] for spec in self.specs}, []
        for batch in run_batches(
            self.model, loader, padding=self.padding, prepare=self._on_device, autocast=self.autocast
        ):
            positions.append(batch.positions)
            for name, values in batch.logits.items():
                logits[name].append(values)
            broken.extend(
                {"shard": shard, "row": row, "image": image_reference(cells[row]), "error": kind, "message": message}
                for row, kind, message in batch.skipped_rows
            )
        kept = np.concatenate([np.zeros(0, np.int64), *positions])
        width = {spec.name: spec.num_outputs for spec in self.specs}
        logits = {
            name: np.concatenate(parts) if parts else np.zeros((0, width[name]), np.float32)
            for name, parts in logits.items()
        }
        return self._answers(table, kept, logits, options, image_column), broken

    def _answers(self, table, kept, logits, options: TaggingOptions, image_column: str) -> pa.Table:
        columns = kept_columns(table.column_names, options, self.specs)
        rows = table.take(pa.array(kept, type=pa.int64()))
        output: dict[str, pa.Array] = {}
        for name in columns:
            column = rows.column(name)
            # The photo itself stays in the input: the output names it (a path), it does not copy its bytes.
            output[name] = (
                pa.array([image_reference(c) for c in column.to_pylist()], pa.string())
                if name == image_column
                else column
            )
        answers = answer_columns(self.specs, logits, top_k=options.top_k, thresholds=options.thresholds)
        return pa.table({**output, **answers})

    def _on_device(self, inputs: dict) -> dict:
        return {
            key: value.to(self.device, non_blocking=True) if torch.is_tensor(value) else value
            for key, value in inputs.items()
        }


def kept_columns(input_columns: list[str], options: TaggingOptions, specs) -> list[str]:
    """The input columns the output copies (`keep_columns`, or all), checked to exist and not to clash with the
    answer columns (a labelled table's `category` beside the answer `category` would be ambiguous)."""
    columns = options.keep_columns if options.keep_columns is not None else input_columns
    missing = [name for name in columns if name not in input_columns]
    if missing:
        raise UserError(f"--keep_columns {missing}: no such input column; the columns are {input_columns}")
    answers = {f"{spec.name}{suffix}" for spec in specs for suffix in ("", "_scores")}
    clashes = sorted(set(columns) & answers)
    if clashes:
        raise UserError(
            f"input column(s) {clashes} have the names of the answer columns of this model's tasks: keep the "
            "other columns with --keep_columns, or rename them in the input"
        )
    return list(columns)


class OutputFolder:
    """The output of a run (local or fsspec URL): claimed with the run's fingerprint, written shard by shard."""

    def __init__(self, location: str, storage_options: Mapping[str, Any]):
        import fsspec

        self.location = location
        self.fs, self.root = fsspec.core.url_to_fs(location, **storage_options)

    def path(self, *parts: str) -> str:
        return "/".join([self.root.rstrip("/"), *parts])

    def check(self, run: dict[str, Any]) -> bool:
        """Whether the folder holds this same run (to resume); raises when it holds another run or other files."""
        recorded = self.path(PROGRESS, "run.json")
        if self.fs.exists(recorded):
            with self.fs.open(recorded, "r") as handle:
                earlier = json.load(handle)
            if earlier.get("fingerprint") != run["fingerprint"]:
                differs = [key for key in ("model", "input", "options") if earlier.get(key) != run.get(key)]
                raise OutputExistsError(
                    f"{self.location} holds a run of another {' and '.join(differs) or 'run'} (fingerprint "
                    f"{earlier.get('fingerprint', '?')[:12]}, this run {run['fingerprint'][:12]}): give a new "
                    "--output, or remove that folder to replace it"
                )
            return True
        if self.fs.exists(self.root) and self.fs.ls(self.root):
            raise OutputExistsError(
                f"{self.location} exists and holds other files: give a new or empty --output folder"
            )
        return False

    def claim(self, run: dict[str, Any]) -> None:
        """Records the run's fingerprint and what it is, unless the folder already holds it (`check`)."""
        if not self.check(run):
            self._write_json(self.path(PROGRESS, "run.json"), run)

    def finished(self, shard: str) -> bool:
        return self.fs.exists(self.path(PREDICTIONS, f"{shard}.parquet"))

    def write_shard(self, shard: str, answers: pa.Table, record: dict[str, Any]) -> None:
        import pyarrow.parquet as pq

        temporary = self.path(PROGRESS, "tmp", f"{shard}.parquet")
        self.fs.makedirs(self.path(PROGRESS, "tmp"), exist_ok=True)
        with self.fs.open(temporary, "wb") as handle:
            pq.write_table(answers, handle)
        self._write_json(self.path(PROGRESS, f"{shard}.json"), record)
        self.fs.makedirs(self.path(PREDICTIONS), exist_ok=True)
        self.fs.mv(temporary, self.path(PREDICTIONS, f"{shard}.parquet"))  # the shard counts as done from here

    def records(self, shards: list[InputShard]) -> Iterator[dict[str, Any]]:
        for shard in shards:
            with self.fs.open(self.path(PROGRESS, f"{shard.name}.json"), "r") as handle:
                yield json.load(handle)

    def write_summary(self, summary: dict[str, Any], broken: list[dict[str, Any]]) -> None:
        with self.fs.open(self.path(BAD_IMAGES_FILE), "w") as handle:
            handle.writelines(json.dumps(row) + "\n" for row in broken)
        self._write_json(self.path(SUMMARY_FILE), summary)

    def _write_json(self, path: str, value: Any) -> None:
        self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        with self.fs.open(path, "w") as handle:
            json.dump(value, handle, indent=2)


def tag_catalogue(
    model: str,
    source: str,
    output: str,
    options: TaggingOptions,
    *,
    allow_pickled_weights: bool = False,
    engine: str = "torch",
    master: str | None = None,
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
    }
    run["fingerprint"] = fingerprint(run)
    out = OutputFolder(output, options.storage_options)
    out.check(run)  # before the weights load: a refusal comes at once, and a failed load leaves no claim
    check_model_folder(str(model), engine)
    loading = TaggerSpec(str(model), engine, allow_pickled_weights)
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


@dataclass(frozen=True)
class TaggerSpec:
    """What a process needs to load the tagger: sent to Spark's executors instead of the model itself."""

    model: str
    engine: str = "torch"
    allow_pickled_weights: bool = False

    def load(self) -> Tagger:
        return Tagger(self.model, engine=self.engine, allow_pickled_weights=self.allow_pickled_weights)


_LOADED: dict[TaggerSpec, Tagger] = {}  # per Python process: a Spark worker keeps its model between tasks


def _tag_shard_on_executor(spec: TaggerSpec, options: TaggingOptions, output: str, shard: InputShard) -> dict:
    if spec not in _LOADED:
        _LOADED[spec] = spec.load()
    return tag_shard(_LOADED[spec], shard, options, OutputFolder(output, options.storage_options))


def model_fingerprint(folder: Path) -> str:
    """The model's config and weights, hashed: the same saved model gives the same fingerprint wherever it lies."""
    digest = hashlib.sha256()
    for path in sorted(folder.iterdir()):
        if (
            path.name in ("config.json", "preprocessor_config.json")
            or path.suffix == ".safetensors"
            or path.name.endswith(".bin")
        ):
            digest.update(path.name.encode())
            with open(path, "rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(chunk)
    return digest.hexdigest()


__all__ = [
    "BAD_IMAGES_FILE",
    "PREDICTIONS",
    "SUMMARY_FILE",
    "OutputFolder",
    "Tagger",
    "TaggingOptions",
    "model_fingerprint",
    "tag_catalogue",
]
