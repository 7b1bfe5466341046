"""The precision gate: before a cheaper engine (an int8 ONNX graph, a bf16 forward) answers for a model, it answers
the same held-out photos as the full-precision model, and every task must keep its answers (`metrics/agreement.py`
says how each kind of task is compared); a task that does not is named, with every task's figures, and the cheaper
engine is not used.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict

import numpy as np
import torch

from ..errors import UserError
from ..metrics.agreement import GateLimits, TaskAgreement, engine_agreement


def engine_logits(
    model,
    specs: Sequence,
    transform,
    source,
    *,
    batch_size: int = 64,
    autocast: Callable[[], contextlib.AbstractContextManager] | None = None,
    device: torch.device | str = "cpu",
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(every task's logits, the targets of the tasks `source` labels) for the decodable rows of `source`, in
    order, through `model` (anything answering `model(pixel_values=...).logits`, with the tasks `specs`, on
    `device`) on the shared inference path."""
    from ..data.collator import MultiTaskCollator
    from .batches import inference_loader, padding_pixels, run_batches, source_batches

    labelled = [spec for spec in specs if spec.name in source.task_names]
    loader = inference_loader(
        source_batches(source, batch_size), MultiTaskCollator(labelled, transform, for_inference=True), num_workers=0
    )
    logits, targets = {}, {}
    for batch in run_batches(
        model,
        loader,
        padding=padding_pixels(transform),
        prepare=lambda inputs: {k: v.to(device) if torch.is_tensor(v) else v for k, v in inputs.items()},
        autocast=autocast or contextlib.nullcontext,
        with_labels=True,
    ):
        for name, values in batch.logits.items():
            logits.setdefault(name, []).append(values)
        for name, values in batch.labels.items():
            targets.setdefault(name, []).append(values)
    return (
        {name: np.concatenate(parts) for name, parts in logits.items()},
        {name: np.concatenate(parts) for name, parts in targets.items()},
    )


def photo_count(logits: Mapping[str, np.ndarray]) -> int:
    """How many photos an engine answered (every task has a row each)."""
    return len(next(iter(logits.values()))) if logits else 0


def gated(
    specs: Sequence,
    reference: Mapping[str, np.ndarray],
    candidate: Mapping[str, np.ndarray],
    *,
    limits: GateLimits,
    candidate_name: str,
    fix: str,
    calibration: Mapping[str, dict] | None = None,
    thresholds: Mapping[str, float] | None = None,
    targets: Mapping[str, np.ndarray] | None = None,
) -> list[TaskAgreement]:
    """Each task's agreement between the engines; a `UserError` naming every task outside `limits` (and giving
    every task's figures), whose last words are `fix`."""
    rows = photo_count(reference)
    if rows == 0:
        raise UserError(f"the gate on {candidate_name} has no photo to compare the answers on: {fix}")
    measured = engine_agreement(
        specs, reference, candidate, calibration=calibration, thresholds=thresholds, targets=targets
    )
    failures = [(task, task.failure(limits)) for task in measured if task.failure(limits)]
    if failures:
        failing = "; ".join(f"task {task.task!r}: {why}" for task, why in failures)
        every = ", ".join(task.summary() for task in measured)
        raise UserError(
            f"{candidate_name} fails the gate on {rows} held-out photos: {failing} (every task: {every}); {fix}"
        )
    return measured


def gate_table(measured: Sequence[TaskAgreement], rows: int, where: str, candidate_name: str) -> str:
    """The gate's figures, as printed."""
    lines = [f"{candidate_name} against full precision on {rows} held-out photos ({where}):"]
    lines.append(f"{'task':<14} {'measure':<34} {'value':>8}  {'worst label':<14} calibration error (full -> this)")
    for task in measured:
        ece = "" if task.ece_reference is None else f"{task.ece_reference:.4f} -> {task.ece_candidate:.4f}"
        lines.append(f"{task.task:<14} {task.measure:<34} {task.value:>8.4f}  {task.worst_label or '':<14} {ece}")
    return "\n".join(lines)


def gate_record(measured: Sequence[TaskAgreement], rows: int, where: str, limits: GateLimits) -> dict:
    """The gate as a JSON record (kept beside the engine it let through)."""
    return {
        "rows": rows,
        "data": where,
        "limits": asdict(limits),
        "tasks": [task.record() for task in measured],
    }


__all__ = ["engine_logits", "gate_record", "gate_table", "gated", "photo_count"]
