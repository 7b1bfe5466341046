"""`mtl-hf export MODEL OUTPUT [--format onnx] [--quantize int8]`: a saved model as an ONNX graph for serving stacks
without PyTorch (see `inference/onnx_export.py`), or as an int8 graph kept only where each task keeps its answers on
held-out photos (`inference/quantization.py`); `mtl-hf predict OUTPUT ... --engine onnx` runs either."""

from __future__ import annotations

import argparse
from pathlib import Path

SUMMARY = "a saved model as one ONNX graph (a named output per task, a dynamic batch axis), int8 behind a gate"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..inference.onnx_layout import DEFAULT_INT8_METHOD, DEFAULT_TOLERANCE, INT8_METHODS, QUANTIZE_SCHEMES
    from .precision import add_gate_arguments

    parser.add_argument("model", help="the saved model folder (a LoRA model: merge it first)")
    parser.add_argument("output", help="the folder for the export (new or empty)")
    parser.add_argument("--format", default="onnx", choices=["onnx"], help="the export format (default: onnx)")
    parser.add_argument(
        "--tolerance",
        type=float,
        default=DEFAULT_TOLERANCE,
        help="the largest difference from PyTorch's logits, relative to their scale, that the check accepts "
        f"(default: {DEFAULT_TOLERANCE:g})",
    )
    parser.add_argument(
        "--quantize",
        choices=QUANTIZE_SCHEMES,
        help="an int8 graph (ONNX Runtime's quantisation), written only if every task passes the precision gate on "
        "held-out photos (--gate_data, --min_agreement, ...)",
    )
    parser.add_argument(
        "--int8_method",
        choices=INT8_METHODS,
        default=DEFAULT_INT8_METHOD,
        help="dynamic: int8 weights, activations scaled at run time (the default: as fast as static here, and "
        "no calibration photos); static: activations' scales fixed on 64 held-out photos",
    )
    parser.add_argument("--batch_size", type=int, default=64, help="photos per forward in the gate (default: 64)")
    add_gate_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from ..errors import UserError
    from .model_loading import existing_model, loading_model

    location = existing_model(args.model)
    target = Path(args.output)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise UserError(f"{args.output} exists and is not empty: give a new folder for the export")
    from ..inference.onnx_layout import DEFAULT_INT8_METHOD, ONNX_FILE
    from .precision import gate_limits, gate_rows, refuse_gate_arguments_unused

    if args.quantize is None:
        refuse_gate_arguments_unused(args, "--quantize int8")
        if args.int8_method != DEFAULT_INT8_METHOD:
            raise UserError("--int8_method is for an int8 export: add --quantize int8, or leave it out")

    limits = gate_limits(args) if args.quantize else None
    with loading_model(args.model):
        from ..models.mtl_vit.configuration_mtl_vit import MultiTaskViTConfig

        config = MultiTaskViTConfig.from_pretrained(location)
        if config.lora is not None:
            raise UserError(f"{args.model} has LoRA adapters: fold them in first (mtl-hf merge MODEL MERGED)")
        rows = gate_rows(args, location, config, "an int8 graph") if args.quantize else None
        description = _export(location, args, rows, limits)
    check = description["check"]
    quantization = description.get("quantization")
    print(
        f"exported {args.model} to {args.output}/{ONNX_FILE}"
        + (f" (int8, {quantization['method']}, every task inside the gate)" if quantization else "")
        + f": outputs {[t['name'] for t in description['tasks']]}; ONNX Runtime vs PyTorch on a batch of "
        f"{check['batch']}: largest difference {check['largest_relative_difference']:.2g} of the logits' scale"
        + (" (full precision)" if quantization else "")
    )
    return 0


def _export(location: str, args: argparse.Namespace, rows, limits) -> dict:
    import tempfile

    from ..inference.onnx_export import export_onnx

    if args.quantize is None:
        return export_onnx(location, args.output, tolerance=args.tolerance)
    from ..inference.quantization import quantized_export

    with tempfile.TemporaryDirectory() as scratch:
        full_precision = Path(scratch) / "fp32"
        export_onnx(location, str(full_precision), tolerance=args.tolerance)
        return quantized_export(
            full_precision, args.output, rows=rows, method=args.int8_method, limits=limits, batch_size=args.batch_size
        )


__all__ = ["SUMMARY", "add_arguments", "run"]
