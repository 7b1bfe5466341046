"""CAGrad: conflict-averse gradient descent (Liu et al., NeurIPS 2021)."""

import numpy as np
import torch
from scipy.optimize import minimize

from ...utils.validation import check_positive
from ..base import GramianWeighting


class CAGrad(GramianWeighting):
    """
    Moves along the update `d` that maximises the worst task's improvement within a ball around
    the average gradient `g0`: `d = g0 + (sqrt(phi) / |g_w|) g_w`, where `phi = c^2 |g0|^2` and
    `g_w = sum_k w_k g_k` with `w` on the simplex minimising `g_w . g0 + sqrt(phi) |g_w|`. All of
    it is a quadratic form of the Gramian, so `d = sum_k (1/K + sqrt(phi) w_k / |g_w|) g_k`, solved
    with SciPy's SLSQP on the K x K Gramian. The result is divided by `1 + c^2`, as in the paper's
    experiments. (torchjd's CAGrad solves the same problem with cvxpy, a heavier dependency.)

    Liu, Liu, Jin, Stone, Liu. "Conflict-Averse Gradient Descent for Multi-task Learning."
    NeurIPS 2021. arXiv:2110.14048.

    Args:
        task_names (`list[str]`): the tasks, in the model's order.
        c (`float`, defaults to 0.4): the radius factor; 0 is the average gradient.
    """

    name = "cagrad"
    paper = "Liu et al., NeurIPS 2021"
    requires = ("scipy",)

    def __init__(self, task_names: list[str], c: float = 0.4):
        super().__init__(task_names)
        self.c = check_positive("c", c)

    def gramian_weights(self, gramian: torch.Tensor, tasks: tuple[int, ...]) -> torch.Tensor:
        gram = gramian.numpy()
        k = gram.shape[0]
        mean = np.full(k, 1.0 / k)
        radius = self.c * float(np.sqrt(max(mean @ gram @ mean, 0.0)))

        def objective(w: np.ndarray) -> float:
            return float(w @ gram @ mean + radius * np.sqrt(max(w @ gram @ w, 0.0) + 1e-12))

        result = minimize(
            objective,
            mean,
            method="SLSQP",
            bounds=[(0.0, 1.0)] * k,
            constraints=({"type": "eq", "fun": lambda w: 1.0 - w.sum()},),
        )
        w = result.x
        norm = float(np.sqrt(max(w @ gram @ w, 0.0))) + 1e-12
        return torch.from_numpy((mean + radius / norm * w) / (1.0 + self.c**2))
