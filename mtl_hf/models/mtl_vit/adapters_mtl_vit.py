"""Low-rank adapters on the path of some tasks only: tasks added to a trained model learn through an adapted backbone
while the model's earlier tasks keep the backbone as it was, so that their answers do not move at all.

Each adapted linear layer `W` of the backbone gets `W x + (alpha / rank) * up(down(x))` while the adapter is
applied, and plain `W x` otherwise: the adapters are added by forward hooks, so the backbone's own parameters and
their names stay as they are. `up` starts at zero, so a new adapter changes nothing until it trains. The model runs
its backbone once per path a forward needs (without adapters for the other tasks, with them for the adapted ones).

Like the modeling file, this file imports only torch and its siblings, so it travels with a saved model as remote
code (no peft).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from functools import partial

import torch
from torch import nn

from .backbone_mtl_vit import linear_layer_names


class LowRankUpdate(nn.Module):
    """`(alpha / rank) * up(down(x))`; its weights are set by the model's `_init_weights` (`down` as nn.Linear starts
    its weights, `up` at zero), whether the model is built, loaded or given an adapter."""

    def __init__(self, in_features: int, out_features: int, rank: int, alpha: float):
        super().__init__()
        self.down = nn.Parameter(torch.empty(rank, in_features))
        self.up = nn.Parameter(torch.empty(out_features, rank))
        self.scale = alpha / rank

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(nn.functional.linear(inputs, self.down), self.up) * self.scale


# transformers 5.0-5.x name the attention projections of ViT-like backbones `query` / `key` / `value`, later ones
# `q_proj` / `k_proj` / `v_proj`: a model saved with one loads its adapters on the other. Same layers, same order.
_SAME_LAYER = {"q_proj": "query", "k_proj": "key", "v_proj": "value"}
_SAME_LAYER.update({old: new for new, old in _SAME_LAYER.items()})


def _present_names(backbone: nn.Module, targets: set[str]) -> set[str]:
    if targets & linear_layer_names(backbone):
        return targets
    return {_SAME_LAYER.get(target, target) for target in targets}


class TaskPathAdapter(nn.Module):
    """The adapters of `settings` (`{"tasks", "rank", "alpha", "target_modules"}`, the config's `task_adapter`) on
    `backbone`'s linear layers whose last name is in `target_modules`, applied only inside `applied()`."""

    def __init__(self, backbone: nn.Module, settings: dict):
        super().__init__()
        self.tasks = tuple(settings["tasks"])
        # By position among the adapted layers (backbone order), not by name: saved in transformers' original format,
        # names that look like a backbone's layers would be renamed.
        self.updates = nn.ModuleList()
        self._applied = False
        targets = _present_names(backbone, set(settings["target_modules"]))
        for name, module in backbone.named_modules():
            if isinstance(module, nn.Linear) and name.rpartition(".")[2] in targets:
                module.register_forward_hook(partial(self._add_update, len(self.updates)))
                self.updates.append(
                    LowRankUpdate(module.in_features, module.out_features, settings["rank"], settings["alpha"])
                )
        if not len(self.updates):
            raise ValueError(
                f"task_adapter target_modules {sorted(targets)} match no linear layer of {type(backbone).__name__}"
            )

    def _add_update(self, index: int, module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        if not self._applied:
            return output
        return output + self.updates[index](inputs[0]).to(output.dtype)

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        self._applied = True
        try:
            yield
        finally:
            self._applied = False


__all__ = ["LowRankUpdate", "TaskPathAdapter"]
