"""Static weights: a fixed weight per task, on top of the tasks' `loss_weight`."""

import math

import torch

from ...errors import UserError
from ..base import LossWeighting


class StaticWeighting(LossWeighting):
    """
    `sum_k w_k * loss_weight_k * loss_k` with fixed weights `w_k` (with every `w_k = 1`, the same as
    `equal`: each task's `loss_weight` alone).

    Args:
        task_names (`list[str]`): the tasks, in the model's order.
        weights (`dict[str, float]`, *optional*): a weight for every task (finite, >= 0); defaults to 1 each.
    """

    name = "static"
    paper = "fixed weights"

    def __init__(self, task_names: list[str], weights: dict[str, float] | None = None):
        super().__init__(task_names)
        weights = {name: 1.0 for name in task_names} if weights is None else weights
        if not isinstance(weights, dict):
            raise UserError(f"static weights must be a dict task -> weight, got {weights!r}")
        unknown, absent = sorted(set(weights) - set(task_names)), sorted(set(task_names) - set(weights))
        if unknown or absent:
            raise UserError(f"static weights must name every task: unknown {unknown}, absent {absent}")
        values = [weights[name] for name in task_names]
        if any(isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0 for v in values):
            raise UserError(f"static weights must be finite numbers >= 0, got {weights}")
        self.register_buffer("fixed", torch.tensor(values, dtype=torch.float32))

    def weights(self, losses: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        return self.fixed * present
