"""PCGrad: projecting conflicting gradients (Yu et al., NeurIPS 2020)."""

import torch

from .base import WeightingMethod, step_generator


class PCGrad(WeightingMethod):
    """
    For each task's gradient `g_i`, and each other task `j` in random order: if `g_i . g_j < 0`,
    remove from `g_i` its component along `g_j`. The shared parameters get the sum of the
    projected gradients. The order is drawn from `(seed, step)`, identical on every rank.

    Yu, Kumar, Gupta, Levine, Hausman, Finn. "Gradient Surgery for Multi-Task Learning."
    NeurIPS 2020. arXiv:2001.06782.

    Args:
        task_names (`list[str]`): the tasks, in the model's order.
        seed (`int`, defaults to 0): seed of the projection order.
    """

    name = "pcgrad"
    uses_gradients = True

    def __init__(self, task_names: list[str], seed: int = 0):
        super().__init__(task_names)
        self.seed = int(seed)
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    def weights(self, present: torch.Tensor) -> torch.Tensor:
        return present.float()

    def combine_gradients(self, grads: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        rows = present.bool().nonzero().flatten().tolist()
        generator = step_generator(self.seed, int(self.step))
        self.step += 1
        original = grads.double()
        projected = original.clone()
        for i in rows:
            others = [rows[j] for j in torch.randperm(len(rows), generator=generator).tolist() if rows[j] != i]
            for j in others:
                dot = projected[i] @ original[j]
                if dot < 0:
                    projected[i] -= dot / (original[j] @ original[j]).clamp_min(1e-20) * original[j]
        return projected[rows].sum(dim=0).to(grads.dtype)
