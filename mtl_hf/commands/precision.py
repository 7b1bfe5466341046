"""What the commands that run a model below full precision share: the precision gate's options (its held-out photos
and its limits: `inference/precision_gate.py`), and `--dtype` for the PyTorch engine (`inference/dtypes.py`).

`export --quantize int8` and `predict` / `serve` with `--dtype bf16` hold the cheaper engine against the full-precision
model on held-out photos: `--gate_data` (its `--gate_split`), else the table the model recorded training on, its
validation split, without the rows it trained on. A model with neither is refused: the gate is not skipped.
"""

from __future__ import annotations

import argparse

from ..errors import UserError

DEFAULT_GATE_ROWS = 1000


def add_gate_arguments(parser: argparse.ArgumentParser) -> None:
    from ..metrics.agreement import GateLimits

    limits = GateLimits()
    parser.add_argument(
        "--gate_data",
        help="labelled photos the model did not train on, to check each task's answers below full precision (a "
        "catalogue table, a prepared folder, builtin:shop, ...; default: the table the model recorded training on)",
    )
    parser.add_argument(
        "--gate_split", default="validation", help="the split of the gate's data (default: %(default)s)"
    )
    parser.add_argument(
        "--gate_image_column",
        help="the gate's data's column of photos (default: the recorded table's, as training read it; else image)",
    )
    parser.add_argument(
        "--gate_rows", type=int, default=DEFAULT_GATE_ROWS, help="the gate's photos, at most (default: %(default)s)"
    )
    parser.add_argument(
        "--min_agreement",
        type=float,
        default=limits.min_agreement,
        help="the least share of identical answers per task: best labels, each label's decision (default: %(default)s)",
    )
    parser.add_argument(
        "--max_regression_error",
        type=float,
        default=limits.max_regression_error,
        help="the largest error of a regression answer, as a share of the answers' spread (default: %(default)s)",
    )
    parser.add_argument(
        "--max_ece_increase",
        type=float,
        default=limits.max_ece_increase,
        help="the most a calibrated task's calibration error may rise (default: %(default)s)",
    )


def refuse_gate_arguments_unused(args: argparse.Namespace, needs: str) -> None:
    """A gate option given where no gate runs is refused (it would change nothing): `needs` says what runs one."""
    defaults = argparse.ArgumentParser()
    add_gate_arguments(defaults)
    unused = [
        action.dest
        for action in defaults._actions
        if action.dest != "help" and getattr(args, action.dest) != action.default
    ]
    if unused:
        raise UserError(
            f"--{unused[0]} sets the precision gate, which runs with {needs}: add it, or leave the flag out"
        )


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """`--engine`, `--dtype` and the gate's options, as `predict` and `serve` take them."""
    from ..inference.dtypes import DTYPES

    parser.add_argument(
        "--engine",
        choices=["torch", "onnx"],
        default="torch",
        help="run the model with PyTorch, or with ONNX Runtime from an `mtl-hf export` folder (int8 included)",
    )
    parser.add_argument(
        "--dtype",
        choices=DTYPES,
        default="auto",
        help="the PyTorch engine's precision: auto (bf16 on a GPU that has it, fp32 on the CPU), fp32, or bf16 "
        "(autocast; on a CPU with AVX512-BF16 or AMX, behind the precision gate: --gate_data)",
    )
    add_gate_arguments(parser)


def gate_limits(args: argparse.Namespace):
    """The gate's limits from the command line, checked."""
    from ..metrics.agreement import GateLimits

    if not 0.0 < args.min_agreement <= 1.0:
        raise UserError(f"--min_agreement {args.min_agreement}: a share in (0, 1], e.g. 0.99")
    for flag in ("max_regression_error", "max_ece_increase"):
        if not getattr(args, flag) >= 0.0:
            raise UserError(f"--{flag} {getattr(args, flag)}: give a number >= 0")
    if args.gate_rows < 1:
        raise UserError(f"--gate_rows must be at least 1, got {args.gate_rows}")
    return GateLimits(args.min_agreement, args.max_regression_error, args.max_ece_increase)


def gate_rows(args: argparse.Namespace, location: str, config, what: str):
    """The held-out rows of the gate (`commands/held_out.py`); one line where there are none."""
    from .held_out import held_out_rows

    rows = held_out_rows(
        args.model, location, config, args.gate_data, args.gate_split, args.gate_image_column, args.gate_rows
    )
    if rows is None:
        raise UserError(
            f"{what} is checked task by task on held-out photos, and {args.model} records no table of its training "
            "that exists here: give --gate_data (labelled photos it did not train on, e.g. its validation table)"
        )
    if rows.source.num_rows == 0:
        raise UserError(f"{what}: {rows.description} has no row {args.model} did not train on; give other --gate_data")
    return rows


def gated_bf16(args: argparse.Namespace, location: str, config, thresholds: dict[str, float]) -> None:
    """`--dtype bf16`: the model answers the gate's held-out photos in full precision and in bf16, on the device
    the answers will be made on; a task outside the limits stops the command before anything is answered."""
    import torch

    from ..data.backbone_processor import model_image_processor
    from ..data.transforms import ImageTransforms
    from ..inference.dtypes import check_dtype, forward_precision
    from ..inference.precision_gate import engine_logits, gate_table, gated, photo_count
    from ..models.mtl_vit.modeling_mtl_vit import MultiTaskViTModel

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    check_dtype("bf16", device.type)  # before the gate's photos are read
    limits = gate_limits(args)
    rows = gate_rows(args, location, config, "a bf16 forward")
    model = MultiTaskViTModel.from_pretrained(location, allow_pickled_weights=args.allow_pickled_weights)
    model.to(device).eval()
    transform = ImageTransforms.from_image_processor(model_image_processor(location, config)).eval()
    run = dict(specs=config.task_specs, transform=transform, source=rows.source, device=device)
    reference, targets = engine_logits(model, **run)
    candidate, _ = engine_logits(model, **run, autocast=lambda: forward_precision("bf16", device))
    measured = gated(
        config.task_specs,
        reference,
        candidate,
        limits=limits,
        candidate_name="the bf16 forward",
        fix="use --dtype fp32 (nothing was answered)",
        calibration=config.calibration,
        thresholds=thresholds,
        targets=targets,
    )
    print(gate_table(measured, photo_count(reference), rows.description, "bf16"))


__all__ = [
    "add_engine_arguments",
    "add_gate_arguments",
    "gate_limits",
    "gate_rows",
    "gated_bf16",
    "refuse_gate_arguments_unused",
]
