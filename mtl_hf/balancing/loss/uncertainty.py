"""Uncertainty weighting (Kendall, Gal and Cipolla, CVPR 2018)."""

import torch
from torch import nn

from ..base import LossWeighting


class UncertaintyWeighting(LossWeighting):
    """
    Learns a log-variance `s_k` per task and minimises `sum_k p_k (exp(-s_k) * loss_k + s_k)` (`p_k`:
    the task's `loss_weight`): a task whose loss stays high (noisy) gets a smaller weight
    `exp(-s_k)`, and the `+ s_k` term keeps the weights from collapsing to zero. At its optimum
    `exp(-s_k) = 1 / loss_k`, so `p_k` still scales the task's share. The `s_k` are trained by the
    same optimizer as the model (without weight decay); absent tasks leave theirs untouched.

    Kendall, Gal, Cipolla. "Multi-Task Learning Using Uncertainty to Weigh Losses for Scene
    Geometry and Semantics." CVPR 2018. arXiv:1705.07115.

    Args:
        task_names (`list[str]`): the tasks, in the model's order.
        initial_log_variance (`float`, defaults to 0.0): the starting `s_k` (weight `exp(-s_k)` = 1).
    """

    name = "uncertainty"
    paper = "Kendall et al., CVPR 2018"

    def __init__(self, task_names: list[str], initial_log_variance: float = 0.0):
        super().__init__(task_names)
        self.log_variance = nn.Parameter(torch.full((len(task_names),), float(initial_log_variance)))

    def weights(self, losses: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        return torch.exp(-self.log_variance.detach()).to(losses.dtype) * present

    def combine(self, losses: torch.Tensor, weights: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        log_variance = self.log_variance.to(losses.dtype)
        return (self.priors * present * (torch.exp(-log_variance) * losses + log_variance)).sum()
