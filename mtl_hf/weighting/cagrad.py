"""CAGrad: conflict-averse gradient descent (Liu et al., NeurIPS 2021)."""

import numpy as np
import torch
from scipy.optimize import minimize

from .base import WeightingMethod, check_positive


class CAGrad(WeightingMethod):
    """
    Moves along the update `d` that maximises the worst task's improvement within a ball around
    the average gradient `g0`: `d = g0 + (sqrt(phi) / |g_w|) g_w`, where `phi = c^2 |g0|^2` and
    `g_w = G^T w` with `w` on the simplex minimising `g_w . g0 + sqrt(phi) |g_w|` (solved on the
    K x K Gram matrix). The result is divided by `1 + c^2`, as in the paper's experiments.

    Liu, Liu, Jin, Stone, Liu. "Conflict-Averse Gradient Descent for Multi-task Learning."
    NeurIPS 2021. arXiv:2110.14048.

    Args:
        task_names (`list[str]`): the tasks, in the model's order.
        c (`float`, defaults to 0.4): the radius factor; 0 is the average gradient.
    """

    name = "cagrad"
    uses_gradients = True

    def __init__(self, task_names: list[str], c: float = 0.4):
        super().__init__(task_names)
        self.c = check_positive("c", c)

    def weights(self, present: torch.Tensor) -> torch.Tensor:
        return present.float()

    def combine_gradients(self, grads: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        rows = present.bool().nonzero().flatten().tolist()
        g = grads[rows].double()
        k = len(rows)
        gram = (g @ g.T).cpu().numpy()
        mean_weights = np.full(k, 1.0 / k)
        g0_norm = float(np.sqrt(max(mean_weights @ gram @ mean_weights, 0.0)) + 1e-8)
        radius = self.c * g0_norm

        def objective(w: np.ndarray) -> float:
            return float(w @ gram @ mean_weights + radius * np.sqrt(max(w @ gram @ w, 0.0) + 1e-8))

        result = minimize(
            objective, mean_weights, method="SLSQP", bounds=[(0.0, 1.0)] * k,
            constraints=({"type": "eq", "fun": lambda w: 1.0 - w.sum()},),
        )  # fmt: skip
        w = torch.from_numpy(result.x).to(g)
        g_w = w @ g
        direction = g.mean(dim=0) + radius / (g_w.norm() + 1e-8) * g_w
        return (direction / (1.0 + self.c**2)).to(grads.dtype)
