"""IMTL-L: impartial loss balancing (Liu et al., ICLR 2021)."""

import torch
from torch import nn

from ..base import LossWeighting


class IMTLL(LossWeighting):
    """
    Learns a log-scale `s_k` per task and minimises `sum_k p_k (exp(s_k) * L_k - s_k)` (`p_k`: the task's
    `loss_weight`): at the optimum over `s_k`, `exp(s_k) * L_k = 1`, so every task's scaled loss is the same,
    whatever its units. The `s_k` are trained by the same optimizer as the model (without weight decay); the
    combined loss is linear in each rank's losses and the `s_k` gradients are averaged over the ranks, so under
    DDP it is the objective on the union of the ranks' batches. Absent tasks leave theirs untouched.

    This is the loss half of IMTL; its gradient half is `imtl_g`.

    Liu, Li, Kuang, Xue, Chen, Yang, Liao, Zhang. "Towards Impartial Multi-task Learning." ICLR 2021.

    Args:
        task_names (`list[str]`): the tasks, in the model's order.
        initial_log_scale (`float`, defaults to 0.0): the starting `s_k` (scale `exp(s_k)` = 1).
    """

    name = "imtl_l"
    paper = "Liu et al., ICLR 2021 (loss balance)"

    def __init__(self, task_names: list[str], initial_log_scale: float = 0.0):
        super().__init__(task_names)
        self.log_scale = nn.Parameter(torch.full((len(task_names),), float(initial_log_scale)))

    def weights(self, losses: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        return torch.exp(self.log_scale.detach()).to(losses.dtype) * present

    def combine(self, losses: torch.Tensor, weights: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        log_scale = self.log_scale.to(losses.dtype)
        return (self.priors * present * (torch.exp(log_scale) * losses - log_scale)).sum()
