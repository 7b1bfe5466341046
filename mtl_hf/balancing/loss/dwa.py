"""Dynamic weight average (Liu, Johns and Davison, CVPR 2019)."""

import torch

from ...utils.validation import check_positive
from ..base import LossWeighting


class DynamicWeightAverage(LossWeighting):
    """
    Weighs each task by how slowly its loss fell over the last epochs:
    `w_k = K' * softmax_k(r_k / T)` over the K' present tasks, with `r_k = L_k(e-1) / L_k(e-2)` the
    ratio of the task's average training loss in the two previous epochs. Equal weights until two
    epochs have passed. An epoch's average counts only the steps in which the task had targets.

    Liu, Johns, Davison. "End-to-End Multi-Task Learning with Attention." CVPR 2019.
    arXiv:1803.10704.

    Args:
        task_names (`list[str]`): the tasks, in the model's order.
        temperature (`float`, defaults to 2.0): `T`; larger is closer to equal weights.
    """

    name = "dwa"
    paper = "Liu et al., CVPR 2019"

    def __init__(self, task_names: list[str], temperature: float = 2.0):
        super().__init__(task_names)
        self.temperature = check_positive("temperature", temperature)
        k = len(task_names)
        self.register_buffer("epoch_sums", torch.zeros(k))
        self.register_buffer("epoch_counts", torch.zeros(k))
        self.register_buffer("history", torch.full((2, k), float("nan")))  # epochs e-2, e-1

    def weights(self, losses: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        ratios = self.history[1] / self.history[0].clamp_min(1e-12)
        logits = torch.where(present, ratios / self.temperature, torch.full_like(ratios, -torch.inf))
        dynamic = present.sum() * torch.softmax(logits, dim=0).nan_to_num(0.0)
        # Without two epochs of history (a NaN ratio), equal weights; no host round trip to decide.
        return torch.where(torch.isnan(ratios).any(), present.to(losses.dtype), dynamic.to(losses.dtype)) * present

    def observe(self, losses: torch.Tensor, present: torch.Tensor) -> None:
        self.epoch_sums += torch.where(present, losses.detach().to(self.epoch_sums.dtype), 0.0)
        self.epoch_counts += present.to(self.epoch_counts.dtype)

    def end_epoch(self) -> None:
        averages = self.epoch_sums / self.epoch_counts.clamp_min(1)
        # A task unseen in an epoch keeps its last average.
        averages = torch.where(self.epoch_counts > 0, averages, self.history[1])
        self.history.copy_(torch.stack([self.history[1], averages]))
        self.epoch_sums.zero_()
        self.epoch_counts.zero_()
