"""FAMO: fast adaptive multitask optimization (Liu et al., NeurIPS 2023)."""

import torch

from ...errors import UserError
from ...utils.validation import check_positive
from ..base import LossWeighting


class FAMO(LossWeighting):
    """
    Keeps task logits `xi` and weights `z = softmax(xi)` over the present tasks, and descends
    `sum_k z_k log(L_k - m_k) / c` with `c = sum_k z_k / (L_k - m_k)`: every task's loss falls at
    the same rate in expectation. Its gradient is `sum_k w_k grad L_k` with `w_k = z_k / (c (L_k - m_k))`,
    which is what this method returns as weights, computed from the losses averaged over all ranks:
    under DDP the combined loss is then linear in each rank's losses, and the averaged gradient is
    FAMO's on the union of the ranks' batches.

    After an optimizer step, the step's own batches are evaluated again (no gradient), in training
    mode with the random state of the step's forward (the same dropout), so that
    `delta_k = log L_k - log L'_k` measures the update alone; `xi` moves along `-grad_xi z(xi) . delta`
    (Adam with L2 decay, one moment per task, updated only for tasks present before and after):
    tasks whose loss fell least gain weight. The extra forward costs about a third of a step;
    `update_every` pays it on every n-th step only, and the weights then adapt n times less often.
    (Comparing consecutive steps' losses instead, on different images, was tried and measured on
    the demo: the batch-to-batch noise swamps the update's effect and the weights collapse.)

    Liu, Liu, Jin, Stone, Liu. "FAMO: Fast Adaptive Multitask Optimization." NeurIPS 2023.
    arXiv:2306.03792.

    Args:
        task_names (`list[str]`): the tasks, in the model's order.
        learning_rate (`float`, defaults to 0.1): Adam step size for `xi` (the paper's beta, 0.025 there). At
            0.025, over a few hundred steps, the logits cannot undo the `1 / L_k` in the weights: the task whose
            loss falls fastest takes nearly all the weight (bench/famo_analysis.py: on digits, 440 steps, mean
            score relative to chance 0.46 at 0.025, 0.90 at 0.1, equal weights 0.86; on shop-16px 0.75 and
            0.77, equal 0.70).
        weight_decay (`float`, defaults to 0.001): decay of `xi` towards equal weights (gamma).
        min_losses (`dict[str, float]`, *optional*): a lower bound `m_k` per task (defaults to 0).
        update_every (`int`, defaults to 1): update `xi` after every n-th optimizer step.
        scale_to_tasks (`bool`, defaults to False): multiply the weights by the number of present tasks. FAMO's
            weights sum to 1, so its combined gradient is a weighted mean of the tasks' where `equal`'s is their
            sum: at the same learning rate it steps about K times shorter. With this, they sum to K, as
            `equal`'s do.
        warm_start (`bool`, defaults to False): set `xi` from the first step's losses, `xi_k = log(L_k - m_k)`,
            so that the first weights are equal instead of `1 / L_k` (which favours the task whose loss starts
            lowest until the logits have learnt otherwise).
    """

    name = "famo"
    paper = "Liu et al., NeurIPS 2023"
    betas = (0.9, 0.999)
    eps = 1e-8

    def __init__(
        self,
        task_names: list[str],
        learning_rate: float = 0.1,
        weight_decay: float = 0.001,
        min_losses: dict[str, float] | None = None,
        update_every: int = 1,
        scale_to_tasks: bool = False,
        warm_start: bool = False,
    ):
        super().__init__(task_names)
        self.learning_rate = check_positive("learning_rate", learning_rate)
        if isinstance(weight_decay, bool) or not isinstance(weight_decay, (int, float)) or weight_decay < 0:
            raise UserError(f"weight_decay must be a number >= 0, got {weight_decay!r}")
        self.weight_decay = float(weight_decay)
        if isinstance(update_every, bool) or not isinstance(update_every, int) or update_every < 1:
            raise UserError(f"update_every must be a positive integer, got {update_every!r}")
        self.update_every = update_every
        for name, value in (("scale_to_tasks", scale_to_tasks), ("warm_start", warm_start)):
            if not isinstance(value, bool):
                raise UserError(f"{name} must be true or false, got {value!r}")
        self.scale_to_tasks = scale_to_tasks
        self.warm_start = warm_start
        self.warmed = False  # Python state (extra state in checkpoints): no device read to decide it
        self.steps = 0
        min_losses = min_losses or {}
        unknown = sorted(set(min_losses) - set(task_names))
        if unknown:
            raise UserError(f"min_losses names unknown tasks {unknown}")
        k = len(task_names)
        self.register_buffer("min_losses", torch.tensor([float(min_losses.get(t, 0.0)) for t in task_names]))
        self.register_buffer("logits", torch.zeros(k))
        self.register_buffer("exp_avg", torch.zeros(k))
        self.register_buffer("exp_avg_sq", torch.zeros(k))
        self.register_buffer("updates", torch.zeros(k))  # Adam's step count, per task
        # The losses of the step in progress (mean over its micro-batches).
        self.register_buffer("step_sums", torch.zeros(k))
        self.register_buffer("step_counts", torch.zeros(k))

    @property
    def needs_losses_after_step(self) -> bool:
        return self.steps % self.update_every == 0

    def task_probabilities(self, present: torch.Tensor) -> torch.Tensor:
        """`z`: the softmax of the task logits over the present tasks (0 elsewhere)."""
        masked = torch.where(present, self.logits, torch.full_like(self.logits, -torch.inf))
        return torch.softmax(masked, dim=0).nan_to_num(0.0)

    def _shifted(self, losses: torch.Tensor) -> torch.Tensor:
        return (losses - self.min_losses).clamp_min(0) + 1e-8

    def weights(self, losses: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        shifted = self._shifted(losses.detach().float())
        if self.warm_start and not self.warmed:
            # z_k proportional to L_k - m_k: the first weights z_k / (c (L_k - m_k)) are then all equal.
            self.logits.copy_(torch.where(present, shifted.log(), self.logits))
            self.warmed = True
        z = self.task_probabilities(present)
        c = (z / shifted * present).sum().clamp_min(1e-12)
        weights = z / (c * shifted) * present
        if self.scale_to_tasks:
            weights = weights * present.sum()
        return weights.to(losses.dtype)

    def observe(self, losses: torch.Tensor, present: torch.Tensor) -> None:
        self.step_sums += torch.where(present, losses.detach().float(), 0.0)
        self.step_counts += present.float()

    def end_step(self, losses_after=None, present_after=None) -> None:
        if self.needs_losses_after_step:
            if losses_after is None:
                raise RuntimeError("FAMO needs the step's losses re-evaluated after the optimizer step")
            present = self.step_counts > 0
            current = self.step_sums / self.step_counts.clamp_min(1)
            self.update_logits(current, losses_after, present & present_after)
        self.step_sums.zero_()
        self.step_counts.zero_()
        self.steps += 1

    def skip_step(self) -> None:
        self.step_sums.zero_()
        self.step_counts.zero_()

    def update_logits(self, before: torch.Tensor, after: torch.Tensor, present: torch.Tensor) -> None:
        """One Adam step on the logits of the tasks in `present`, from their losses before and after a step."""
        delta = torch.where(present, self._shifted(before).log() - self._shifted(after.float()).log(), 0.0)
        # grad_xi of z(xi) . delta, for the softmax over the present tasks: z * (delta - z . delta).
        z = self.task_probabilities(present)
        gradient = z * (delta - (z * delta).sum()) + self.weight_decay * self.logits
        beta1, beta2 = self.betas
        steps = self.updates + present.float()
        exp_avg = torch.where(present, beta1 * self.exp_avg + (1 - beta1) * gradient, self.exp_avg)
        exp_avg_sq = torch.where(present, beta2 * self.exp_avg_sq + (1 - beta2) * gradient.square(), self.exp_avg_sq)
        correction1 = 1 - beta1 ** steps.clamp_min(1)
        correction2 = 1 - beta2 ** steps.clamp_min(1)
        step = self.learning_rate / correction1 * exp_avg / (exp_avg_sq.sqrt() / correction2.sqrt() + self.eps)
        self.logits.copy_(torch.where(present, self.logits - step, self.logits))
        self.exp_avg.copy_(exp_avg)
        self.exp_avg_sq.copy_(exp_avg_sq)
        self.updates.copy_(steps)

    def get_extra_state(self):
        return {"steps": self.steps, "warmed": self.warmed}

    def set_extra_state(self, state):
        self.steps = int(state["steps"])
        self.warmed = bool(state.get("warmed", self.steps > 0))
