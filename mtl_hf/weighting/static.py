"""Static weights: a fixed weight per task, by default the task specs' `loss_weight`."""

import math

import torch

from .base import WeightingMethod


class StaticWeighting(WeightingMethod):
    """
    Sum of `weight_k * loss_k` with fixed weights.

    Args:
        task_names (`list[str]`): the tasks, in the model's order.
        weights (`dict[str, float]`): a weight for every task (finite, >= 0).
    """

    name = "static"

    def __init__(self, task_names: list[str], weights: dict[str, float]):
        super().__init__(task_names)
        unknown, absent = sorted(set(weights) - set(task_names)), sorted(set(task_names) - set(weights))
        if unknown or absent:
            raise ValueError(f"static weights must name every task: unknown {unknown}, absent {absent}")
        values = [weights[name] for name in task_names]
        if any(isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0 for v in values):
            raise ValueError(f"static weights must be finite numbers >= 0, got {weights}")
        self.register_buffer("fixed", torch.tensor(values, dtype=torch.float32))

    def weights(self, present: torch.Tensor) -> torch.Tensor:
        return self.fixed * present
