"""`Tagger`: a saved model loaded once (per process, per Spark executor), with its image processor's eval
transform, turning a table of photos into a table of answers; and what it needs of the model folder."""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from ..data.collator import MultiTaskCollator
from ..data.sources import RawExample
from ..data.transforms import ImageTransforms
from ..errors import UserError
from ..models.mtl_vit.answers_mtl_vit import PARQUET_VERSION_KEY, SCHEMA_VERSION
from ..utils.validation import check_choice
from .answers import answer_columns
from .batches import RowBatch, inference_loader, padding_pixels, run_batches
from .dtypes import DTYPES, check_dtype, forward_precision
from .inputs import check_image_column, image_location, image_reference

ENGINES = ("torch", "onnx")


@dataclass
class TaggingOptions:
    """How `tag_catalogue` reads the catalogue and what it writes.

    Args:
        image_column: the input table's column of photos (a folder of images has one, `image`).
        keep_columns: the input columns copied to the output (default: all of them).
        top_k: labels in each `{task}_scores`.
        thresholds: per multilabel task, the score from which a label is in `{task}` (default: each label's
            calibrated threshold, 0.5 where it has none).
        review_cuts: per task, the confidence below which its answer is marked `{task}_needs_review` (and the row
            `needs_review`): `inference/review.py` chooses them for `--review_precision`.
        batch_size: images per forward.
        num_workers: DataLoader workers decoding photos (0: in the main process).
        shard_rows: rows per input shard, for inputs that are not already Parquet shards.
        storage_options: fsspec options for object storage (input, photos and output).
        hash_photos: a folder's photos enter the run's fingerprint by their bytes, not their sizes and times.
    """

    image_column: str = "image"
    keep_columns: list[str] | None = None
    top_k: int = 3
    thresholds: dict[str, float] = field(default_factory=dict)
    review_cuts: dict[str, float] = field(default_factory=dict)
    batch_size: int = 64
    num_workers: int = 0
    shard_rows: int = 10_000
    storage_options: dict[str, Any] = field(default_factory=dict)
    hash_photos: bool = False

    def recorded(self) -> dict[str, Any]:
        """What decides the output's rows (for the run's fingerprint): not speed settings, nor credentials."""
        return {
            key: value
            for key, value in asdict(self).items()
            if key in ("image_column", "keep_columns", "top_k", "thresholds", "review_cuts")
        }


def check_model_folder(model: str, engine: str, dtype: str = "auto") -> None:
    """What a tagger needs of the model folder, checked where it is named (on Spark's driver, before any executor
    tries): an image processor (saved, or implied by the config: `model_image_processor`), and for the ONNX engine
    onnxruntime and the exported graph (whose precision is the export's: no `dtype`)."""
    from ..data.backbone_processor import PROCESSOR_FILE, processor_from_config
    from ..models.mtl_vit.configuration_mtl_vit import MultiTaskViTConfig

    check_choice("engine", engine, ENGINES)
    check_choice("dtype", dtype, DTYPES)
    if engine == "onnx" and dtype != "auto":
        raise UserError(
            f"--dtype {dtype} is the PyTorch engine's; an ONNX graph runs at the precision it was exported with "
            "(int8: mtl-hf export MODEL OUT --quantize int8)"
        )
    if not (Path(model) / PROCESSOR_FILE).is_file():
        backbone = MultiTaskViTConfig.from_pretrained(model).backbone_config
        processor_from_config(model, backbone, kind="model", notice=False)
    if engine == "onnx":
        from .onnx_export import OnnxModel

        OnnxModel.check(model)


class Tagger:
    """A saved model loaded once (per process, per Spark executor), with its image processor's eval transform,
    turning a table of photos into a table of answers."""

    def __init__(
        self,
        model: str,
        *,
        allow_pickled_weights: bool = False,
        device: str | None = None,
        engine: str = "torch",
        dtype: str = "auto",
    ):
        from ..data.backbone_processor import model_image_processor
        from ..models.mtl_vit.configuration_mtl_vit import MultiTaskViTConfig
        from ..models.mtl_vit.modeling_mtl_vit import MultiTaskViTModel

        check_model_folder(model, engine, dtype)
        self.dtype = dtype
        if engine == "onnx":  # ONNX Runtime on the CPU, from an `mtl-hf export` folder
            from .onnx_export import OnnxModel

            self.device = torch.device("cpu")
            self.model = OnnxModel(model)
        else:
            self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
            check_dtype(dtype, self.device.type)
            self.model = MultiTaskViTModel.from_pretrained(model, allow_pickled_weights=allow_pickled_weights)
            self.model.to(self.device).eval()
        # The ONNX engine has no PyTorch model whose config to ask.
        config = MultiTaskViTConfig.from_pretrained(model) if engine == "onnx" else self.model.config
        if engine == "onnx":
            self.model.check_config(config, model)
        processor = model_image_processor(model, config)
        self.transform = ImageTransforms.from_image_processor(processor).eval()
        self.padding = padding_pixels(self.transform)
        self.specs = config.task_specs
        self.calibration = config.calibration

    def autocast(self) -> contextlib.AbstractContextManager:
        """The forward's precision: bf16 where asked (checked: `commands/precision.check_dtype`), or with `auto` on
        an accelerator that has it; full precision otherwise."""
        return forward_precision(self.dtype, self.device)

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
            MultiTaskCollator([], self.transform, for_inference=True, uint8_pixels=True),
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
        answers = answer_columns(
            self.specs,
            logits,
            top_k=options.top_k,
            thresholds=options.thresholds,
            calibration=self.calibration,
            review_cuts=options.review_cuts,
        )
        table = pa.table({**output, **answers})
        # The answer columns are the answer object's fields (docs/answers.md); the version says which ones.
        return table.replace_schema_metadata({PARQUET_VERSION_KEY: str(SCHEMA_VERSION).encode()})

    def _on_device(self, inputs: dict) -> dict:
        """The batch on the model's device, its uint8 pixels (as the workers send them) normalised there."""
        moved = {
            key: value.to(self.device, non_blocking=True) if torch.is_tensor(value) else value
            for key, value in inputs.items()
        }
        moved["pixel_values"] = self.transform.normalize(moved["pixel_values"])
        return moved


def kept_columns(input_columns: list[str], options: TaggingOptions, specs) -> list[str]:
    """The input columns the output copies (`keep_columns`, or all), checked to exist and not to clash with the
    answer columns (a labelled table's `category` beside the answer `category` would be ambiguous)."""
    columns = options.keep_columns if options.keep_columns is not None else input_columns
    missing = [name for name in columns if name not in input_columns]
    if missing:
        raise UserError(f"--keep_columns {missing}: no such input column; the columns are {input_columns}")
    answers = {f"{spec.name}{suffix}" for spec in specs for suffix in ("", "_scores")}
    if options.review_cuts:
        answers |= {f"{task}_needs_review" for task in options.review_cuts} | {"needs_review"}
    clashes = sorted(set(columns) & answers)
    if clashes:
        raise UserError(
            f"input column(s) {clashes} have the names of the answer columns of this model's tasks: keep the "
            "other columns with --keep_columns, or rename them in the input"
        )
    return list(columns)


@dataclass(frozen=True)
class TaggerSpec:
    """What a process needs to load the tagger: sent to Spark's executors instead of the model itself."""

    model: str
    engine: str = "torch"
    allow_pickled_weights: bool = False
    dtype: str = "auto"

    def load(self) -> Tagger:
        return Tagger(
            self.model, engine=self.engine, allow_pickled_weights=self.allow_pickled_weights, dtype=self.dtype
        )


__all__ = [
    "ENGINES",
    "Tagger",
    "forward_precision",
    "TaggerSpec",
    "TaggingOptions",
    "check_model_folder",
    "kept_columns",
]
