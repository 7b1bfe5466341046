"""Dynamic weight average (Liu, Johns and Davison, CVPR 2019)."""

import torch

from .base import WeightingMethod, check_positive


class DynamicWeightAverage(WeightingMethod):
    """
    Weighs each task by how slowly its loss fell over the last epochs:
    `w_k = K * softmax_k(r_k / T)` with `r_k = L_k(e-1) / L_k(e-2)`, the ratio of the task's
    average training loss in the two previous epochs. Equal weights for the first two epochs.

    Liu, Johns, Davison. "End-to-End Multi-Task Learning with Attention." CVPR 2019.
    arXiv:1803.10704.

    Args:
        task_names (`list[str]`): the tasks, in the model's order.
        temperature (`float`, defaults to 2.0): `T`; larger is closer to equal weights.
    """

    name = "dwa"

    def __init__(self, task_names: list[str], temperature: float = 2.0):
        super().__init__(task_names)
        self.temperature = check_positive("temperature", temperature)
        k = len(task_names)
        self.register_buffer("epoch_sums", torch.zeros(k, dtype=torch.float64))
        self.register_buffer("epoch_counts", torch.zeros(k, dtype=torch.float64))
        self.register_buffer("history", torch.full((2, k), float("nan"), dtype=torch.float64))  # e-2, e-1

    def weights(self, present: torch.Tensor) -> torch.Tensor:
        if torch.isnan(self.history).any():
            return present.float()
        ratios = (self.history[1] / self.history[0].clamp_min(1e-12)).float()
        return len(self.task_names) * torch.softmax(ratios / self.temperature, dim=0) * present

    def observe(self, losses: torch.Tensor, present: torch.Tensor) -> None:
        self.epoch_sums += (losses.detach().double() * present).cpu()
        self.epoch_counts += present.double().cpu()

    def end_epoch(self) -> None:
        averages = self.epoch_sums / self.epoch_counts.clamp_min(1)
        # A task unseen in an epoch keeps its last average.
        averages = torch.where(self.epoch_counts > 0, averages, self.history[1])
        self.history.copy_(torch.stack([self.history[1], averages]))
        self.epoch_sums.zero_()
        self.epoch_counts.zero_()
