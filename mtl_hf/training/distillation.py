"""Learning without Forgetting (Li and Hoiem, ECCV 2016): a model's earlier self answers each training photo, and
its answers are soft targets for the model's own heads of those tasks, so that tasks with no labels in the new
data keep answering as they did while the backbone learns the new ones.

Per head, over the batch's photos, with temperature T (both sides' scores divided by T, the loss scaled by T^2 so
that its gradient keeps its size as T changes, as in Hinton et al. 2015):
  classification   KL(softmax(teacher / T) || softmax(model / T))
  multilabel       binary cross-entropy of sigmoid(model / T) against sigmoid(teacher / T), less its minimum
                   (the teacher's own entropy), so that a perfect match scores 0 as KL does
  regression       squared error between the two predictions in the head's standardised units (no temperature)
The terms are averaged over the distilled heads and multiplied by `distill_weight`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError


class Distillation:
    """The teacher (frozen, in eval mode) and what its answers add to each training step's loss."""

    def __init__(self, teacher: nn.Module, model: nn.Module, *, weight: float, temperature: float):
        missing = [name for name in teacher.task_names if name not in model.task_names]
        if missing:
            raise UserError(
                f"the teacher's tasks {missing} are not the model's: distillation keeps the model's own heads near "
                "their earlier answers, so the teacher must be the model's earlier self"
            )
        self.teacher = teacher.eval().requires_grad_(False)
        self.tasks = list(teacher.task_names)
        self.weight, self.temperature = weight, temperature

    def to(self, device: torch.device | str) -> Distillation:
        self.teacher.to(device)
        return self

    def with_distilled_heads(self, inputs: dict) -> dict:
        """The batch's inputs with the distilled heads among those that run (a batch of one source names its own)."""
        if inputs.get("tasks") is not None:
            inputs["tasks"] = list(dict.fromkeys([*inputs["tasks"], *self.tasks]))
        return inputs

    def loss(self, model: nn.Module, inputs: dict, outputs) -> torch.Tensor:
        """`distill_weight` times the mean of the distilled heads' terms (see the module's docstring), from the
        model's `outputs` of the batch `inputs`."""
        with torch.no_grad():
            answers = self.teacher(pixel_values=inputs["pixel_values"], tasks=self.tasks).logits
        terms = [self._term(model, name, outputs.logits[name], answers[name]) for name in self.tasks]
        return self.weight * torch.stack(terms).mean()

    def _term(self, model: nn.Module, name: str, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        kind, t = model.config.get_task(name).type, self.temperature
        student, teacher = student.float(), teacher.float()
        if kind == "classification":
            return F.kl_div(F.log_softmax(student / t, -1), F.log_softmax(teacher / t, -1), log_target=True,
                            reduction="batchmean") * t * t  # fmt: skip
        if kind == "multilabel":
            soft = torch.sigmoid(teacher / t)
            cross = F.binary_cross_entropy_with_logits(student / t, soft)
            entropy = F.binary_cross_entropy_with_logits(teacher / t, soft)
            return (cross - entropy) * t * t
        head = model.heads[name]
        if head.target_statistics is not None:
            student, teacher = head.standardized(student), head.standardized(teacher)
        return F.mse_loss(student, teacher)


def distillation_of(teacher: nn.Module | None, model: nn.Module, args, weighting) -> Distillation | None:
    """The trainer's distillation from `teacher` (None without one), on the arguments' device."""
    if teacher is None:
        return None
    if weighting.uses_gradients and args.gradient_space == "parameters":
        raise UserError(
            f"distillation adds the teacher's term to the step's loss, which weighting {weighting.name!r} does not "
            "form (it back-propagates each task on its own): use a loss-based weighting (e.g. equal)"
        )
    return Distillation(teacher, model, weight=args.distill_weight, temperature=args.distill_temperature).to(
        args.device
    )


__all__ = ["Distillation", "distillation_of"]
