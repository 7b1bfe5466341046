"""PCGrad: projecting conflicting gradients (Yu et al., NeurIPS 2020)."""

import torch

from ..base import GramianWeighting, step_generator


class PCGrad(GramianWeighting):
    """
    For each task's gradient `g_i`, and each other task `j` in random order: if `g_i' . g_j < 0`,
    remove from `g_i'` its component along `g_j`. The shared parameters get the sum of the
    projected gradients. Every projected gradient is a combination `sum_k c_ik g_k`, and every dot
    product it needs is a row of the Gramian, so the method runs on the K x K Gramian alone; its
    weights are `sum_i c_i`. The order is drawn from `(seed, call)`, identical on every rank and
    after a resume (torchjd's PCGrad draws from the global random state, which is neither).

    Yu, Kumar, Gupta, Levine, Hausman, Finn. "Gradient Surgery for Multi-Task Learning."
    NeurIPS 2020. arXiv:2001.06782.

    Args:
        task_names (`list[str]`): the tasks, in the model's order.
        seed (`int`, defaults to 0): seed of the projection order.
    """

    name = "pcgrad"
    paper = "Yu et al., NeurIPS 2020"

    def __init__(self, task_names: list[str], seed: int = 0):
        super().__init__(task_names)
        self.seed = int(seed)
        self.calls = 0

    def gramian_weights(self, gramian: torch.Tensor, tasks: tuple[int, ...]) -> torch.Tensor:
        generator = step_generator(self.seed, self.calls)
        self.calls += 1
        k = gramian.shape[0]
        weights = torch.zeros(k, dtype=gramian.dtype)
        for i in range(k):
            coefficients = torch.zeros(k, dtype=gramian.dtype)
            coefficients[i] = 1.0
            for j in torch.randperm(k, generator=generator).tolist():
                if j == i:
                    continue
                dot = coefficients @ gramian[:, j]  # g_i' . g_j
                if dot < 0:
                    coefficients[j] -= dot / gramian[j, j].clamp_min(1e-20)
            weights += coefficients
        return weights

    def get_extra_state(self):
        return {"calls": self.calls}

    def set_extra_state(self, state):
        self.calls = int(state["calls"])
