"""A task's head, its targets and its loss, per task type; part of the remote code that travels with every
saved model (it imports only its siblings).

| task type        | target                                  | missing value | loss                   |
|------------------|-----------------------------------------|---------------|------------------------|
| `classification` | class ids, int, shape `(B,)`            | `-100`        | cross-entropy          |
| `multilabel`     | multi-hot in [0, 1], shape `(B, L)`     | `-100`        | binary cross-entropy   |
| `regression`     | real values, shape `(B, K)` (or `(B,)`) | `NaN`         | squared, absolute or Huber error |

Each task's loss is the mean over its present targets in the batch (with `class_weights`, the weighted mean
over them, as `cross_entropy(weight=...)` takes it); a task whose targets are all missing contributes 0
(never NaN) and sends zero gradient. The task's `TaskSpec` chooses the options: `label_smoothing`,
`class_weights`, `pos_weight`, the regression `loss` and its `huber_delta`. A regression head with
`"standard"` target scaling is trained on standardised targets, so its loss is in units of the targets' spread.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .tasks_mtl_vit import BALANCED, TaskSpec, balanced_weights


class MultiTaskHead(nn.Module):
    """Maps the pooled backbone vector to one task's outputs: dropout, optional hidden layer, linear.

    A regression head with standardised targets (`TaskSpec.scaled_targets`) outputs standardised values;
    `in_target_units` maps them to the targets' units and `standardized` maps targets to the head's.
    """

    def __init__(self, in_features: int, task: TaskSpec):
        super().__init__()
        self.set_target_statistics(task.target_statistics if task.scaled_targets else None)
        self.set_loss_weights(balanced_weights(task))
        self.dropout = nn.Dropout(task.dropout) if task.dropout > 0 else nn.Identity()
        if task.hidden_size is not None:
            self.dense = nn.Linear(in_features, task.hidden_size)
            self.activation = nn.GELU()
            in_features = task.hidden_size
        else:
            self.dense = None
        self.out_proj = nn.Linear(in_features, task.num_outputs)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        hidden = self.dropout(pooled)
        if self.dense is not None:
            hidden = self.dropout(self.activation(self.dense(hidden)))
        return self.out_proj(hidden)

    def set_target_statistics(self, statistics: dict | None) -> None:
        """The mean and std the head's outputs are standardised with (None: raw units)."""
        self.target_statistics = statistics
        self._affine: dict = {}  # (device, dtype) -> (mean, std): made once per device, not per step

    def set_loss_weights(self, weights: list[float] | None) -> None:
        """The task's class weights (classification) or positive weights (multilabel); None: unweighted."""
        self.loss_weights = weights
        self._weights: dict = {}  # device -> tensor, made once per device, not per step

    def loss_weight_tensor(self, device: torch.device) -> torch.Tensor | None:
        """The loss weights on `device`, in float32 as the loss is computed."""
        if self.loss_weights is None:
            return None
        if device not in self._weights:
            self._weights[device] = torch.tensor(self.loss_weights, device=device, dtype=torch.float32)
        return self._weights[device]

    def _mean_std(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        key = (like.device, like.dtype)
        if key not in self._affine:
            stats = self.target_statistics
            self._affine[key] = tuple(
                torch.tensor(stats[k], device=like.device, dtype=like.dtype) for k in ("mean", "std")
            )
        return self._affine[key]

    def in_target_units(self, outputs: torch.Tensor) -> torch.Tensor:
        if self.target_statistics is None:
            return outputs
        mean, std = self._mean_std(outputs)
        return outputs * std + mean

    def standardized(self, target: torch.Tensor) -> torch.Tensor:
        mean, std = self._mean_std(target)
        return (target - mean) / std


MISSING_CLASS = -100
"""Target value that marks a missing class id (classification) or entry (multilabel)."""


def task_loss(
    task: TaskSpec,
    logits: torch.Tensor,
    target: torch.Tensor,
    standardize=None,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean loss of `task` over the present targets of the batch; 0 when none is present.

    `standardize` (regression): maps the checked targets into the units `logits` are in, the head's
    standardised units (see `TaskSpec.target_scaling`). `weights`: the class weights (classification) or
    positive weights (multilabel) that the task's spec gives, on the logits' device (see `MultiTaskHead`).
    The mean divides by `loss_denominator`.
    """
    target = _checked_target(task, logits, target)
    if standardize is not None:
        target = standardize(target)
    logits = logits.float()
    present = present_targets(task, target)
    if weights is None and BALANCED in (task.class_weights, task.pos_weight):
        raise ValueError(
            f"task {task.name!r}: 'balanced' weights need the training data's label counts (TaskSpec.label_counts), "
            "which MultiTaskTrainer records before the first step; train with it, or give the weights as a list"
        )
    if task.type == "classification":
        summed = F.cross_entropy(
            logits,
            target,
            weight=weights,
            ignore_index=MISSING_CLASS,
            reduction="sum",
            label_smoothing=task.label_smoothing or 0.0,
        )
        if weights is not None:
            # The weighted mean: each labelled row counts as much as its class's weight.
            return summed / loss_denominator(task, target, weights).clamp(min=1e-12)
    elif task.type == "multilabel":
        per_entry = F.binary_cross_entropy_with_logits(
            logits, torch.where(present, target, torch.zeros_like(target)), reduction="none", pos_weight=weights
        )
        summed = (per_entry * present).sum()
    else:
        summed = (_regression_error(task, logits, torch.nan_to_num(target, nan=0.0)) * present).sum()
    # Dividing by at least 1 keeps the graph (and DDP's view of the head's parameters) intact
    # when every target is missing, where a masked mean would give NaN.
    return summed / present.sum().clamp(min=1)


def loss_denominator(task: TaskSpec, target: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """What `task_loss` is a mean over: the number of present targets, or with class weights (classification) the
    sum of their classes' weights. Several batches' losses (the ranks' under DDP) combine into their union's in
    proportion to it."""
    present = present_targets(task, target)
    if task.type == "classification" and weights is not None:
        return torch.where(present, weights[target.long().clamp(min=0)], 0.0).sum()
    return present.sum().float()


def _regression_error(task: TaskSpec, outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if task.loss == "l1":
        return (outputs - target).abs()
    if task.loss == "huber":
        return F.huber_loss(outputs, target, reduction="none", delta=task.huber_delta)
    return (outputs - target).square()


def present_targets(task: TaskSpec, target: torch.Tensor) -> torch.Tensor:
    """Where `target` holds a value: not `MISSING_CLASS` (classification, multilabel) or not NaN (regression)."""
    if task.type == "regression":
        return ~torch.isnan(target)
    return target != MISSING_CLASS


def check_target_values(task: TaskSpec, target: torch.Tensor) -> None:
    """Raises on a class id out of range, a multilabel entry outside [0, 1] or an infinite regression target.

    Reading values costs a device -> host sync, so `forward` checks only targets on the CPU; the
    trainer's collator checks every batch on the host before it reaches the accelerator.
    """
    if task.type == "classification":
        bad = (target != MISSING_CLASS) & ((target < 0) | (target >= task.num_outputs))
        if bad.any():
            value = target[bad][0].item()
            raise ValueError(
                f"task {task.name!r}: label {value} out of range ({task.num_outputs} labels: "
                f"0..{task.num_outputs - 1}, or {MISSING_CLASS} for missing)"
            )
    elif task.type == "multilabel":
        bad = (target != MISSING_CLASS) & ((target < 0) | (target > 1) | torch.isnan(target))
        if bad.any():
            value = target[bad][0].item()
            raise ValueError(
                f"task {task.name!r}: multilabel target {value} is not in [0, 1] "
                f"(use 1/0 per label, or {MISSING_CLASS} for missing)"
            )
    elif torch.isinf(target).any():
        raise ValueError(f"task {task.name!r}: regression target is infinite; use NaN for missing values")


def _checked_target(task: TaskSpec, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    where = f"labels[{task.name!r}]"
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"{where} must be a torch.Tensor, got {type(target).__name__}")
    batch_size = logits.shape[0]
    if target.ndim == 0 or target.shape[0] != batch_size:
        raise ValueError(f"{where} has shape {tuple(target.shape)} but the batch has {batch_size} images")

    if task.type == "classification":
        if target.dtype.is_floating_point or target.dtype == torch.bool or target.is_complex():
            raise TypeError(
                f"{where}: classification targets are class ids, an integer tensor (torch.long), "
                f"got {target.dtype}; mark missing targets with {MISSING_CLASS}"
            )
        if target.ndim != 1:
            raise ValueError(f"{where} must have shape (batch_size,), got {tuple(target.shape)}")
        target = target.long()
    else:
        expected = (batch_size, task.num_outputs)
        if task.type == "regression" and task.num_outputs == 1 and target.ndim == 1:
            target = target.unsqueeze(1)
        if tuple(target.shape) != expected:
            raise ValueError(f"{where} must have shape {expected}, got {tuple(target.shape)}")
        target = target.float()
    # Under torch.compile the values are left to the collator's host check: reading them would split the graph.
    if target.device.type == "cpu" and not torch.compiler.is_compiling():
        check_target_values(task, target)
    return target.to(logits.device)


__all__ = [
    "MISSING_CLASS",
    "MultiTaskHead",
    "check_target_values",
    "loss_denominator",
    "present_targets",
    "task_loss",
]
