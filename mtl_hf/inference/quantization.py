"""int8 ONNX graphs, kept only where every task keeps its answers: `mtl-hf export MODEL OUT --quantize int8`.

The full-precision export (`inference/onnx_export.py`, checked against PyTorch) is quantised with ONNX Runtime's
own tools, after its shape pre-processing, weights per output channel, matrix products only (`QUANTIZED`):

- `dynamic` (the default): int8 weights; each activation's scale is taken from the activation itself at run time,
  so nothing depends on calibration photos;
- `static`: int8 weights and activations whose scales were fixed beforehand from `CALIBRATION_PHOTOS` held-out photos
  (quantise / dequantise pairs around each operator, the QDQ format).

Dynamic is the default because on the machines this was measured on (bench/results/inference_throughput.md) it was
at least as fast as static and needs no photo to choose a scale on, so its answers do not depend on which photos
calibrated it. Either way, the graph answers the held-out photos beside the full-precision graph before it is
written (`inference/precision_gate.py`): a task outside the gate's limits stops the export, and nothing is written.
Static calibration takes its photos from the first held-out rows and the gate the rest, so that no photo both
chooses the scales and judges them.

The export folder is the full-precision one with `model.onnx` the int8 graph, and `onnx_tasks.json` (and the graph's
metadata) saying so under `quantization`: the scheme, the method, and the gate's figures.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from ..metrics.agreement import GateLimits
from .onnx_layout import DEFAULT_INT8_METHOD, INT8_METHODS, ONNX_FILE, TASKS_FILE

QUANTIZED = ["MatMul"]
"""The operators made int8: the transformer's linear layers and attention products, nearly all of a ViT's work. The
patch embedding's convolution stays in full precision: quantising the normalised pixels themselves cost a tiny
trained shop model 3% of its category answers and a size error of a third of the answers' spread, where keeping it
cost 0.3% and 0.02 (300 photos), for one layer of dozens."""
CALIBRATION_PHOTOS = 64
"""Static quantisation: the held-out photos whose activations fix the scales (and which the gate then leaves out)."""


def quantize_graph(source: Path, target: Path, method: str, calibration: Sequence[np.ndarray] = ()) -> None:
    """Writes `source`'s graph quantised to int8 by `method` at `target`; `calibration`: batches of pixels, for
    `static`."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class _Batches(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(calibration)

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {"pixel_values": batch}

    with tempfile.TemporaryDirectory() as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        quant_pre_process(str(source), str(prepared))
        if method == "dynamic":
            quantize_dynamic(
                str(prepared),
                str(target),
                weight_type=QuantType.QInt8,
                per_channel=True,
                op_types_to_quantize=QUANTIZED,
            )
        elif method == "static":
            if not calibration:
                raise UserError("static int8 quantisation needs calibration photos; none of the held-out rows decoded")
            quantize_static(
                str(prepared),
                str(target),
                _Batches(),
                quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                per_channel=True,
                op_types_to_quantize=QUANTIZED,
            )
        else:
            raise UserError(f"--int8_method {method!r}: choose one of {list(INT8_METHODS)}")


def quantized_export(
    folder: str | Path,
    output: str | Path,
    *,
    rows,
    method: str = DEFAULT_INT8_METHOD,
    limits: GateLimits | None = None,
    thresholds: dict[str, float] | None = None,
    batch_size: int = 64,
) -> dict[str, Any]:
    """Quantises the export folder `folder` (full precision) into `output`, behind the gate on `rows`
    (`commands/held_out.HeldOutRows`); returns the export's description, gate included. Nothing is written to
    `output` when the gate refuses."""
    from ..data.backbone_processor import model_image_processor
    from ..data.transforms import ImageTransforms
    from ..models.mtl_vit.configuration_mtl_vit import MultiTaskViTConfig
    from .onnx_export import OnnxModel, add_metadata
    from .precision_gate import engine_logits, gate_record, gate_table, gated, photo_count

    folder, output, limits = Path(folder), Path(output), limits or GateLimits()
    config = MultiTaskViTConfig.from_pretrained(folder)
    transform = ImageTransforms.from_image_processor(model_image_processor(str(folder), config)).eval()
    specs = config.task_specs
    reference_model = OnnxModel(str(folder))
    source, calibration, where = rows.source, [], rows.description
    if method == "static":
        calibration, source = _calibration_split(transform, source, batch_size)
        where += f", after the {rows.source.num_rows - source.num_rows} calibration photos"
    reference, targets = engine_logits(reference_model, specs, transform, source, batch_size=batch_size)
    with tempfile.TemporaryDirectory() as scratch:
        graph = Path(scratch) / ONNX_FILE
        quantize_graph(folder / ONNX_FILE, graph, method, calibration)
        candidate, _ = engine_logits(
            OnnxModel(str(folder), graph=graph), specs, transform, source, batch_size=batch_size
        )
        checked = photo_count(reference)
        measured = gated(
            specs,
            reference,
            candidate,
            limits=limits,
            candidate_name=f"the int8 graph ({method})",
            fix="nothing was written; try --int8_method "
            + ("static" if method == "dynamic" else "dynamic")
            + ", or keep the full-precision export",
            calibration=config.calibration,
            thresholds=thresholds,
            targets=targets,
        )
        print(gate_table(measured, checked, where, f"int8 ({method})"))
        description = json.loads((folder / TASKS_FILE).read_text())
        description["quantization"] = {
            "scheme": "int8",
            "method": method,
            "gate": gate_record(measured, checked, where, limits),
        }
        add_metadata(graph, description)
        output.mkdir(parents=True, exist_ok=True)
        for item in folder.iterdir():
            if item.name not in (ONNX_FILE, TASKS_FILE):
                shutil.copy(item, output / item.name)
        shutil.copy(graph, output / ONNX_FILE)
    (output / TASKS_FILE).write_text(json.dumps(description, indent=2) + "\n")
    return description


def _calibration_split(transform, source, batch_size: int):
    """(the pixels of the first `CALIBRATION_PHOTOS` rows in batches, the rest of `source`)."""
    from ..data.collator import MultiTaskCollator
    from .batches import inference_loader, source_batches

    count = min(CALIBRATION_PHOTOS, source.num_rows // 2)
    head = source.derived(source.dataset.select(range(count)), row_numbers=source.row_numbers[:count])
    rest = source.derived(source.dataset.select(range(count, source.num_rows)), row_numbers=source.row_numbers[count:])
    loader = inference_loader(
        source_batches(head, batch_size), MultiTaskCollator([], transform, for_inference=True), num_workers=0
    )
    pixels = [batch["pixel_values"].numpy() for batch in loader if batch["pixel_values"] is not None]
    return pixels, rest


__all__ = ["CALIBRATION_PHOTOS", "quantize_graph", "quantized_export"]
