"""How fine-tuning treats the backbone and the heads: freezing the backbone (linear probing, and LP-FT: unfrozen
after some steps), the heads' own learning rate, and layer-wise learning-rate decay, as optimizer parameter groups.

Layer-wise decay (as BEiT, MAE and DINOv2 fine-tune) gives the backbone's block `i` of `L` (counted from 0) the
learning rate `learning_rate * layer_decay ** (L - i)`: the last block `layer_decay` times the full rate, each
earlier one a factor `layer_decay` slower, the embeddings slowest at `layer_decay ** (L + 1)`, so that the
general features of the early layers move least. The norms after the last block and the heads train at the full
rate (or `head_learning_rate`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn
from transformers import TrainerCallback

from ..errors import UserError

logger = logging.getLogger(__name__)

# The numbered blocks of a backbone, the first `layer.N.` or `layers.N.` of a parameter's name: `layers.3.` (ViT,
# DeiT, DINOv2 in transformers 5), `encoder.layer.3.` (their saved names), `encoder.layers.3.` (CLIP and SigLIP
# vision towers). Swin and ConvNeXt number stages, each of several numbered blocks, and are refused.
_LAYER_PATTERN = re.compile(r"^(?:\w+\.)*?layers?\.(\d+)\.")
_STAGE_PATTERN = re.compile(r"\.(stages|layers)\.\d+\.(blocks|layers)\.\d+\.")


@dataclass(frozen=True)
class FineTuning:
    """The learning-rate settings of a run, from `MultiTaskTrainingArguments`."""

    learning_rate: float
    weight_decay: float
    head_learning_rate: float | None = None
    layer_decay: float | None = None
    unfreeze_at_step: int | None = None

    @property
    def shapes_groups(self) -> bool:
        """Whether the optimizer needs groups of its own beyond Trainer's (which hold only the parameters that
        train now, by weight decay): per rate, or with a frozen backbone that is to train later."""
        return self.head_learning_rate is not None or self.layer_decay is not None or self.unfreeze_at_step is not None


def backbone_layer_ids(backbone: nn.Module) -> dict[str, int]:
    """Each backbone parameter's depth: 0 for the embeddings, `i + 1` for block `i`, `L + 1` after the last block.

    Raises `UserError` for a backbone without one sequence of numbered blocks.
    """
    names = [name for name, _ in backbone.named_parameters()]
    numbered = {name: int(match.group(1)) for name in names if (match := _LAYER_PATTERN.match(name))}
    if not numbered or any(_STAGE_PATTERN.search(f".{name}") for name in names):
        kind = type(backbone).__name__
        raise UserError(
            f"layer_decay needs a backbone with one sequence of numbered blocks (layers.N), and {kind} "
            "has none (Swin and ConvNeXt number stages of blocks); leave layer_decay unset"
        )
    depth = max(numbered.values()) + 1
    return {name: numbered[name] + 1 if name in numbered else 0 if "embed" in name else depth + 1 for name in names}


def parameter_groups(model: nn.Module, settings: FineTuning, decay_names: Sequence[str]) -> list[dict]:
    """The optimizer's parameter groups: per learning rate and weight decay, the backbone's and the heads'.

    Every parameter of the model is in a group, a frozen one too (it has no gradient, so the optimizer leaves it
    as it is), so that unfreezing the backbone during the run needs no new optimizer. The group at the base
    learning rate comes first: Trainer logs the first group's rate as `learning_rate`.
    """
    decay_names = set(decay_names)
    layer_ids = backbone_layer_ids(model.backbone) if settings.layer_decay is not None else {}
    depth = max(layer_ids.values(), default=0)
    groups: dict[tuple[float, float], list] = {}
    for name, parameter in model.named_parameters():
        weight_decay = settings.weight_decay if name in decay_names else 0.0
        if name.startswith("heads."):
            rate = settings.head_learning_rate if settings.head_learning_rate is not None else settings.learning_rate
        elif name.startswith("backbone.") and layer_ids:
            rate = settings.learning_rate * settings.layer_decay ** (depth - layer_ids[name.removeprefix("backbone.")])
        else:
            rate = settings.learning_rate
        groups.setdefault((rate, weight_decay), []).append(parameter)
    ordered = sorted(groups.items(), key=lambda item: (item[0][0] != settings.learning_rate, -item[0][0]))
    return [{"params": params, "lr": rate, "weight_decay": decay} for (rate, decay), params in ordered]


class BackboneFreezing(TrainerCallback):
    """Keeps the backbone frozen (no gradient) for the first `unfreeze_at_step` optimizer steps, or for the whole
    run (None); a resumed run past that step starts unfrozen.

    Frozen for the whole run, the backbone is frozen at once, so that neither the optimizer nor DDP holds its
    parameters. To be unfrozen later, it is frozen when training begins, after DDP has registered its parameters
    (DDP all-reduces the gradients of the parameters that required one when it wrapped the model; until the
    unfreeze step its `find_unused_parameters`, Trainer's default, leaves the frozen ones without a gradient).
    Only the parameters that were trainable when the freezing began are unfrozen: a LoRA backbone's adapters, never
    the base weights LoRA keeps frozen.
    """

    def __init__(self, backbone: nn.Module, unfreeze_at_step: int | None):
        self.trainable = [parameter for parameter in backbone.parameters() if parameter.requires_grad]
        self.unfreeze_at_step = unfreeze_at_step
        self.frozen = True
        if unfreeze_at_step is None:
            self._set(trainable=False)

    def _set(self, *, trainable: bool) -> None:
        for parameter in self.trainable:
            parameter.requires_grad_(trainable)

    def frozen_at(self, step: int) -> bool:
        return self.unfreeze_at_step is None or step < self.unfreeze_at_step

    def on_train_begin(self, args, state, control, **kwargs):
        self.frozen = self.frozen_at(state.global_step)
        self._set(trainable=not self.frozen)

    def on_step_begin(self, args, state, control, **kwargs):
        if self.frozen and not self.frozen_at(state.global_step):
            self.frozen = False
            self._set(trainable=True)
            logger.info("step %d: the backbone is unfrozen and trains from here on", state.global_step)


def grouped_optimizer(trainer, model: nn.Module):
    """The optimizer over `parameter_groups` (head and layer-wise rates; frozen parameters included for a later
    unfreeze), of the class and settings `trainer` (a Trainer) would use."""
    from transformers.trainer_optimizer import is_optimizer_factory

    optimizer_cls, kwargs = trainer.optimizer_cls_and_kwargs or trainer.get_optimizer_cls_and_kwargs(
        trainer.args, model
    )
    builds_own = [key for key in ("params", "model", "optimizer_dict") if key in kwargs]
    if builds_own or is_optimizer_factory(optimizer_cls):
        raise UserError(
            f"optim {trainer.args.optim!r} builds its own parameter groups, which head_learning_rate, layer_decay "
            "and unfreeze_backbone_at_step need to set; use a standard optimizer such as adamw_torch"
        )
    groups = parameter_groups(model, trainer.args.fine_tuning, trainer.get_decay_parameter_names(model))
    for group in groups:
        logger.info(
            "learning rate %.3g, weight decay %g: %d tensors", group["lr"], group["weight_decay"], len(group["params"])
        )
    return optimizer_cls(groups, **kwargs)


def check_unfreeze_step(unfreeze_at_step: int | None, planned_steps: int) -> None:
    """Refuses an unfreeze step the run never reaches (the backbone would stay frozen throughout)."""
    if unfreeze_at_step is not None and unfreeze_at_step >= planned_steps:
        raise UserError(
            f"unfreeze_backbone_at_step {unfreeze_at_step} is not before the run's end ({planned_steps} steps): the "
            "backbone would never train; lower it, or drop it to keep the backbone frozen (linear probing)"
        )


__all__ = [
    "BackboneFreezing",
    "FineTuning",
    "backbone_layer_ids",
    "check_unfreeze_step",
    "grouped_optimizer",
    "parameter_groups",
]
