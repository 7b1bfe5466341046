"""Random loss weighting (Lin et al., TMLR 2022)."""

import torch

from ..base import LossWeighting, step_generator


class RandomLossWeighting(LossWeighting):
    """
    Draws fresh weights every optimizer step: `w = K' * softmax(z)` over the K' present tasks,
    `z ~ N(0, I)`. The draw comes from a host generator seeded with `(seed, step)`, so every rank
    draws the same weights and a resumed run draws what the uninterrupted one would have; the K
    numbers are sent to the device without waiting for it.

    Lin, Ye, Xu, Shi, Zhang. "Reasonable Effectiveness of Random Weighting: A Litmus Test for
    Multi-Task Learning." TMLR 2022. arXiv:2111.10603.

    Args:
        task_names (`list[str]`): the tasks, in the model's order.
        seed (`int`, defaults to 0): seed of the draws.
    """

    name = "rlw"
    paper = "Lin et al., TMLR 2022"

    def __init__(self, task_names: list[str], seed: int = 0):
        super().__init__(task_names)
        self.seed = int(seed)
        self.steps = 0

    def weights(self, losses: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        draw = torch.randn(self.num_tasks, generator=step_generator(self.seed, self.steps))
        z = draw.to(losses.device, non_blocking=True).masked_fill(~present, -torch.inf)
        return (present.sum() * torch.softmax(z, dim=0)).nan_to_num(0.0).to(losses.dtype)

    def end_step(self, losses_after=None, present_after=None) -> None:
        self.steps += 1

    def get_extra_state(self):
        return {"steps": self.steps}

    def set_extra_state(self, state):
        self.steps = int(state["steps"])
