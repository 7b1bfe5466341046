"""The geometric mean of the task losses (Chennupati et al., CVPR Workshops 2019)."""

import torch

from ...utils.validation import check_positive
from ..base import LossWeighting


class GeometricMean(LossWeighting):
    """
    Descends `K' * (prod_k L_k) ** (1 / K')` over the K' present tasks: a product, so a task's scale
    cancels out of its share. Its gradient is `sum_k (G / L_k) grad L_k` with `G` the losses' geometric
    mean: the weights are `w_k = G / L_k`, 1 for every task when all losses are equal (as under equal
    weights, hence the factor K'). The losses are those averaged over all ranks, so that under DDP the
    averaged gradient is the objective's on the union of the ranks' batches. Stateless.

    Chennupati, Sistu, Yogamani, Rawashdeh. "MultiNet++: Multi-Stream Feature Aggregation and Geometric
    Loss Strategy for Multi-Task Learning." CVPR Workshops 2019. arXiv:1904.08492.

    Args:
        task_names (`list[str]`): the tasks, in the model's order.
        eps (`float`, defaults to 1e-8): keeps a loss of 0 finite.
    """

    name = "geometric"
    paper = "Chennupati et al., CVPRW 2019"

    def __init__(self, task_names: list[str], eps: float = 1e-8):
        super().__init__(task_names)
        self.eps = check_positive("eps", eps)

    def weights(self, losses: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        log_losses = torch.log(losses.detach() + self.eps)
        mean_log = (log_losses * present).sum() / present.sum().clamp_min(1)
        return present * torch.exp(mean_log - log_losses)
