"""`mtl-hf export MODEL OUTPUT [--format onnx]`: a saved model as an ONNX graph for serving stacks without
PyTorch (see `inference/onnx_export.py`); `mtl-hf predict OUTPUT ... --engine onnx` runs it."""

from __future__ import annotations

import argparse

SUMMARY = "a saved model as one ONNX graph (a named output per task, a dynamic batch axis)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..inference.onnx_layout import DEFAULT_TOLERANCE

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


def run(args: argparse.Namespace) -> int:
    from ..errors import UserError
    from .model_loading import existing_model, loading_model

    location = existing_model(args.model)
    from ..inference.onnx_export import ONNX_FILE, export_onnx

    with loading_model(args.model):
        from ..models.mtl_vit.configuration_mtl_vit import MultiTaskViTConfig

        if MultiTaskViTConfig.from_pretrained(location).lora is not None:
            raise UserError(f"{args.model} has LoRA adapters: fold them in first (mtl-hf merge MODEL MERGED)")
        description = export_onnx(location, args.output, tolerance=args.tolerance)
    check = description["check"]
    print(
        f"exported {args.model} to {args.output}/{ONNX_FILE}: outputs {[t['name'] for t in description['tasks']]}; "
        f"ONNX Runtime vs PyTorch on a batch of {check['batch']}: largest difference "
        f"{check['largest_relative_difference']:.2g} of the logits' scale"
    )
    return 0


__all__ = ["SUMMARY", "add_arguments", "run"]
