"""Equal weights: every present task counts the same."""

import torch

from ..base import LossWeighting


class EqualWeighting(LossWeighting):
    """Weight 1 for every present task (times its `loss_weight`): the plain sum, the usual baseline ("EW")."""

    name = "equal"
    paper = "the plain sum of the task losses"

    def weights(self, losses: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        return present.to(losses.dtype)
