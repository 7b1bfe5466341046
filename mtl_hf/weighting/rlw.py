"""Random loss weighting (Lin et al., TMLR 2022)."""

import torch

from .base import WeightingMethod, step_generator


class RandomLossWeighting(WeightingMethod):
    """
    Draws fresh weights every step: `w = K * softmax(z)`, `z ~ N(0, I)` over the present tasks.
    The draw comes from a generator seeded with `(seed, step)`, so every rank draws the same
    weights and a resumed run draws what the uninterrupted one would have.

    Lin, Ye, Xu, Shi, Zhang. "Reasonable Effectiveness of Random Weighting: A Litmus Test for
    Multi-Task Learning." TMLR 2022. arXiv:2111.10603.

    Args:
        task_names (`list[str]`): the tasks, in the model's order.
        seed (`int`, defaults to 0): seed of the draws.
    """

    name = "rlw"

    def __init__(self, task_names: list[str], seed: int = 0):
        super().__init__(task_names)
        self.seed = int(seed)
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    def weights(self, present: torch.Tensor) -> torch.Tensor:
        generator = step_generator(self.seed, int(self.step))
        z = torch.randn(len(self.task_names), generator=generator)
        z = z.masked_fill(~present.bool().cpu(), float("-inf"))
        count = int(present.sum())
        return (count * torch.softmax(z, dim=0)).nan_to_num(0.0).to(present.device) if count else present.float()

    def observe(self, losses: torch.Tensor, present: torch.Tensor) -> None:
        self.step += 1
