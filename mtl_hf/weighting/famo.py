"""FAMO: fast adaptive multitask optimization (Liu et al., NeurIPS 2023)."""

import torch
from torch import nn

from .base import WeightingMethod, check_positive


class FAMO(WeightingMethod):
    """
    Keeps task logits `xi`, weights `z = softmax(xi)`, and back-propagates
    `sum_k z_k log(L_k - m_k) / c` with `c = sum_k z_k / (L_k - m_k)` (detached), which gives
    every task's loss the same rate of decrease in expectation at the cost of one loss
    evaluation per step. After the optimizer step, the same batch's losses are evaluated again
    (no gradient) and `xi` moves along `-grad_xi z(xi) . delta`, `delta_k = log(L_k) - log(L'_k)`,
    with Adam and weight decay: tasks whose loss fell least gain weight.

    Liu, Liu, Jin, Stone, Liu. "FAMO: Fast Adaptive Multitask Optimization." NeurIPS 2023.
    arXiv:2306.03792.

    Args:
        task_names (`list[str]`): the tasks, in the model's order.
        learning_rate (`float`, defaults to 0.025): Adam step size for `xi` (the paper's beta).
        weight_decay (`float`, defaults to 0.001): decay of `xi` towards equal weights (gamma).
        min_losses (`dict[str, float]`, *optional*): a lower bound `m_k` per task (defaults to 0).
    """

    name = "famo"
    needs_losses_after_step = True

    def __init__(
        self,
        task_names: list[str],
        learning_rate: float = 0.025,
        weight_decay: float = 0.001,
        min_losses: dict[str, float] | None = None,
    ):
        super().__init__(task_names)
        self.learning_rate = check_positive("learning_rate", learning_rate)
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
        self.weight_decay = float(weight_decay)
        min_losses = min_losses or {}
        unknown = sorted(set(min_losses) - set(task_names))
        if unknown:
            raise ValueError(f"min_losses names unknown tasks {unknown}")
        self.register_buffer("min_losses", torch.tensor([float(min_losses.get(t, 0.0)) for t in task_names]))
        self.logits = nn.Parameter(torch.zeros(len(task_names)), requires_grad=False)
        self._optimizer = torch.optim.Adam([self.logits], lr=self.learning_rate, weight_decay=self.weight_decay)

    def _shifted(self, losses: torch.Tensor) -> torch.Tensor:
        return (losses - self.min_losses.to(losses)).clamp_min(0) + 1e-8

    def weights(self, present: torch.Tensor) -> torch.Tensor:
        logits = self.logits.detach().masked_fill(~present.bool().to(self.logits.device), float("-inf"))
        return torch.softmax(logits, dim=0).nan_to_num(0.0).to(present.device)

    def combine(self, losses: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        z = self.weights(present).to(losses)
        shifted = self._shifted(losses)
        c = (z / shifted * present).sum().detach().clamp_min(1e-12)
        return (z * shifted.log() * present).sum() / c

    def update_after_step(self, losses_before: torch.Tensor, losses_after: torch.Tensor, present: torch.Tensor):
        mask = present.bool().cpu()
        if not mask.any():
            return
        delta = self._shifted(losses_before.detach().cpu()).log() - self._shifted(losses_after.detach().cpu()).log()
        delta = delta * mask
        with torch.enable_grad():
            logits = self.logits.detach().requires_grad_(True)
            z = torch.softmax(logits.masked_fill(~mask, float("-inf")), dim=0).nan_to_num(0.0)
            (grad,) = torch.autograd.grad(z, logits, grad_outputs=delta.to(z))
        self.logits.grad = grad
        self._optimizer.step()
        self._optimizer.zero_grad(set_to_none=True)

    def get_extra_state(self):
        return {"optimizer": self._optimizer.state_dict()}

    def set_extra_state(self, state):
        self._optimizer.load_state_dict(state["optimizer"])
