"""The log of each task loss: DB-MTL's loss-scale balancing (Lin et al., 2023)."""

import torch

from ...utils.validation import check_positive
from ..base import LossWeighting


class LogLoss(LossWeighting):
    """
    Descends `sum_k log(L_k + eps)`: each task counts by its loss's relative change, whatever its scale (a
    price's squared error in dollars weighs as much as a cross-entropy). Its gradient is
    `sum_k grad L_k / (L_k + eps)`, so the weights are `w_k = 1 / (L_k + eps)`, computed from the losses
    averaged over all ranks: under DDP the combined loss is linear in each rank's losses and the averaged
    gradient is the log objective's on the union of the ranks' batches. Stateless, as cheap as equal weights.

    This is the loss-scale half of DB-MTL; its other half, which rescales the tasks' gradients to a common
    norm, is a gradient method and not part of this one.

    Lin, Ye, Xu, Shi, Zhang, Kwok. "Dual-Balancing for Multi-Task Learning." arXiv:2308.12029, 2023.

    Args:
        task_names (`list[str]`): the tasks, in the model's order.
        eps (`float`, defaults to 1e-8): keeps a loss of 0 finite.
    """

    name = "log_loss"
    paper = "Lin et al. 2023 (DB-MTL's loss scale)"

    def __init__(self, task_names: list[str], eps: float = 1e-8):
        super().__init__(task_names)
        self.eps = check_positive("eps", eps)

    def weights(self, losses: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        return present / (losses.detach() + self.eps)
