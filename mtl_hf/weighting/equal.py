"""Equal weights: every present task counts the same."""

import torch

from .base import WeightingMethod


class EqualWeighting(WeightingMethod):
    """Sum of the task losses, each with weight 1 (the usual baseline, "EW")."""

    name = "equal"

    def weights(self, present: torch.Tensor) -> torch.Tensor:
        return present.float()
