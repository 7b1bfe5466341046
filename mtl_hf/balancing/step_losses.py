"""One step's task losses, as every balancing method and every rank must see them.

A task is *present* in a step when it has at least one target in the step on some rank; only
present tasks take part in balancing, state and logs. Under DDP each rank's task loss (a mean over
its own present targets, or with class weights a weighted mean: see
`MultiTaskViTModel.task_loss_denominator`) is rescaled by `local_denominator * world_size /
global_denominator`, so that the ranks' average, which DDP's gradient averaging computes, is the
loss over all the ranks' targets (the loss of the union batch, weighted as one process weighs it)
rather than a mean of means biased towards ranks with few targets or light classes.
Everything stays on the device; the one collective packs the denominators, the counts and the
detached losses.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from ..models.mtl_vit.configuration_mtl_vit import TaskSpec
from ..models.mtl_vit.heads_mtl_vit import present_targets
from ..models.mtl_vit.modeling_mtl_vit import MultiTaskOutput
from ..utils.collectives import all_reduce_sum, world_size


@dataclass(frozen=True)
class StepLosses:
    """
    The step's task losses, one entry per task of the model, in its order.

    Args:
        local (`torch.Tensor` of shape `(K,)`): this rank's losses, rescaled so that their mean over
            the ranks is the loss of the union batch; attached to the graph; 0 for tasks without targets.
        mean (`torch.Tensor` of shape `(K,)`): the loss of each task over all the ranks' targets, detached.
        present (`torch.Tensor` of shape `(K,)`, bool): the task has at least one target in the step.
        ran (`tuple[str, ...]`): the tasks whose heads ran and took targets on this rank (a host fact,
            from the batch's structure, not its values).
    """

    local: torch.Tensor
    mean: torch.Tensor
    present: torch.Tensor
    ran: tuple[str, ...]


def step_losses(
    task_specs: Mapping[str, TaskSpec],
    outputs: MultiTaskOutput,
    labels: Mapping,
    denominator: Callable[[str, torch.Tensor], torch.Tensor],
) -> StepLosses:
    """The step's `StepLosses` from the model's outputs and the batch's targets; `denominator(task, target)`: what
    the task's loss is a mean over (`MultiTaskViTModel.task_loss_denominator`)."""
    reference = next(iter(outputs.logits.values()))
    zero = reference.new_zeros((), dtype=torch.float32)
    losses = torch.stack([outputs.task_losses.get(name, zero).float() for name in task_specs])
    counts = torch.stack(
        [
            present_targets(spec, labels[name]).sum().float() if name in outputs.task_losses else zero
            for name, spec in task_specs.items()
        ]
    )
    ran = tuple(name for name in task_specs if name in outputs.task_losses)
    ranks = world_size()
    if ranks == 1:
        present = counts > 0
        return StepLosses(local=losses, mean=losses.detach() * present, present=present, ran=ran)
    shares = torch.stack([denominator(name, labels[name]).float() if name in ran else zero for name in task_specs])
    k = len(task_specs)
    packed = all_reduce_sum(torch.cat([losses.detach() * shares, shares, counts]))
    total_shares, present = packed[k : 2 * k], packed[2 * k :] > 0
    kept = torch.where(total_shares > 0, total_shares, torch.ones_like(total_shares))
    mean = torch.where(present, packed[:k] / kept, torch.zeros_like(kept))
    scale = torch.where(present, shares * ranks / kept, torch.zeros_like(shares))
    return StepLosses(local=losses * scale, mean=mean, present=present, ran=ran)


__all__ = ["StepLosses", "step_losses"]
