"""Smooth Tchebycheff scalarization (Lin et al., ICML 2024)."""

import torch

from ...utils.validation import check_positive
from ..base import LossWeighting


class SmoothTchebycheff(LossWeighting):
    """
    Descends `mu * log sum_k exp(l_k / mu)` over the present tasks, with `l_k = L_k / L0_k` each loss
    relative to its first value: a smooth maximum, so the task that has improved least (relatively) gets
    most of the weight, the more so the smaller `mu`. Its gradient is `sum_k softmax_k(l / mu) grad L_k /
    L0_k`; the weights are `w_k = K' * softmax_k(l / mu) / L0_k` (K' times, so that equal relative losses
    give the same total weight as equal weights on normalised losses). The losses and each task's first
    loss `L0_k` (its first step with targets, recorded and kept in checkpoints) are those averaged over all
    ranks, so under DDP the averaged gradient is the objective's on the union of the ranks' batches.

    The ideal point is 0 and the preferences equal (times each task's `loss_weight`, as for every method).

    Lin, Zhang, Yang, Zhang, Liu, Kwong. "Smooth Tchebycheff Scalarization for Multi-Objective
    Optimization." ICML 2024. arXiv:2402.19078.

    Args:
        task_names (`list[str]`): the tasks, in the model's order.
        mu (`float`, defaults to 0.5): the smoothing; towards 0 the plain maximum, large values equal weights
            on the normalised losses.
    """

    name = "stch"
    paper = "Lin et al., ICML 2024"

    def __init__(self, task_names: list[str], mu: float = 0.5):
        super().__init__(task_names)
        self.mu = check_positive("mu", mu)
        self.register_buffer("initial_losses", torch.full((len(task_names),), float("nan")))

    def weights(self, losses: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        losses = losses.detach()
        initial = self.initial_losses.to(losses.dtype)
        initial = torch.where(torch.isnan(initial), losses, initial).clamp_min(1e-12)
        relative = torch.where(present, losses / initial / self.mu, torch.full_like(losses, -torch.inf))
        share = torch.softmax(relative, dim=0).nan_to_num(0.0)
        return present * present.sum() * share / initial

    def observe(self, losses: torch.Tensor, present: torch.Tensor) -> None:
        first = torch.isnan(self.initial_losses) & present
        self.initial_losses.copy_(
            torch.where(first, losses.detach().to(self.initial_losses.dtype), self.initial_losses)
        )
