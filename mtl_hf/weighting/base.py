"""The interface every loss-balancing method implements.

A method sees one vector of task losses per step (one entry per task of the model, in order)
with a mask of the tasks present in the batch, and returns the loss to back-propagate. A
gradient-based method (`uses_gradients`) instead combines per-task gradients of the shared
parameters into one. Whatever a method learns or remembers lives in its own parameters, buffers
and `get_extra_state`, so `state_dict()` saves it with the checkpoint and nothing is hidden.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn


class WeightingMethod(nn.Module):
    """Base class: `task_names` fixes the order of every loss vector and weight vector."""

    name: ClassVar[str]
    uses_gradients: ClassVar[bool] = False
    """Combines per-task gradients of the shared parameters instead of losses."""
    needs_losses_after_step: ClassVar[bool] = False
    """Updates itself from the same batch's losses re-evaluated after the optimizer step."""

    def __init__(self, task_names: list[str]):
        super().__init__()
        if not task_names:
            raise ValueError(f"{type(self).__name__} needs at least one task")
        self.task_names = list(task_names)

    @property
    def num_tasks(self) -> int:
        return len(self.task_names)

    def weights(self, present: torch.Tensor) -> torch.Tensor:
        """The weight of each task in this step (0 for absent tasks), for the loss and the logs."""
        raise NotImplementedError

    def combine(self, losses: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """The loss to back-propagate, from the task losses (absent tasks hold 0)."""
        return (self.weights(present).to(losses) * losses * present).sum()

    def combine_gradients(self, grads: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """One gradient for the shared parameters from the per-task rows of `grads` (K, P)."""
        raise NotImplementedError(f"{type(self).__name__} combines losses, not gradients")

    def update_after_step(self, losses_before: torch.Tensor, losses_after: torch.Tensor, present: torch.Tensor):
        """Learns from how the step changed the losses of the batch it was computed on."""

    def end_epoch(self) -> None:
        """Called at the end of every training epoch."""

    def observe(self, losses: torch.Tensor, present: torch.Tensor) -> None:
        """Sees every step's task losses (averaged over ranks, detached)."""


def step_generator(seed: int, step: int) -> torch.Generator:
    """A generator for draw `step` of a run seeded with `seed`: the same on every rank and after resume."""
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def check_positive(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return float(value)
