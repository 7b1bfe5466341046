"""The gradient path: per-task gradients, their Gramian across ranks, a `GramianWeighting`, `.grad`.

Two spaces to take the per-task gradients in (`gradient_space`):

- `parameters` (default): the gradients of each task's loss with respect to every backbone
  parameter (one backward through the backbone per task, a K x P matrix), averaged over the ranks
  in one all-reduce, combined with the weights of their Gramian and written into `.grad`. What the
  papers describe; it costs K backward passes and K copies of the backbone's gradient.
- `representation`: the gradients of each task's loss with respect to the features the heads
  read (the backbone's output, `B x T x D` per task, reached through the heads alone), as LibMTL's
  `rep_grad`. Their K x K Gramian is summed over the ranks (each rank holds other images, so the
  union batch's Gramian is the sum), the method turns it into weights `w`, and ONE ordinary
  backward pass gives the backbone `sum_k w_k grad L_k` and each head its task's own
  `p_k grad L_k` (`p_k`: the prior). The backward is Trainer's own, so DDP averages the gradients
  as in any step, gradient accumulation and mixed precision work as usual, and the step costs
  about one backward. Task gradients conflict far less in this space than in the parameters'
  (measured on the demo: mean |cos| 0.01 against 0.06-0.10), so conflict-resolving methods have
  less to act on.

Either way the weights are computed once per step on the host from the K x K Gramian (one
device -> host copy) and are identical on every rank. Parameters that no task reached keep no
gradient (`None`), as in the loss path.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..utils import host
from ..utils.collectives import all_reduce_sum, world_size
from .base import GramianWeighting
from .step_losses import StepLosses

GRADIENT_SPACES = ("parameters", "representation")


def gramian_weights(method: GramianWeighting, gramian: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """The weight of each task's gradient (the method's weight times the task's prior), on the device,
    from the K x K Gramian of the step (the same on every rank). One host round trip."""
    k = method.num_tasks
    values = host.to_host(torch.cat([gramian.detach().float().flatten(), present.float()])).double()
    weights = method.host_weights(values[: k * k].view(k, k), values[k * k :] > 0)
    return weights.to(device=gramian.device, dtype=torch.float32, non_blocking=True) * method.priors


def task_embedding(task_names: Sequence[str], ran: Sequence[str], reference: torch.Tensor) -> torch.Tensor:
    """The K x K' 0/1 matrix placing the K' tasks that ran among the model's K tasks."""
    embedding = reference.new_zeros((len(task_names), len(ran)), dtype=torch.float32)
    for column, name in enumerate(ran):
        embedding[list(task_names).index(name), column] = 1.0
    return embedding


class FeatureTap:
    """Keeps the backbone's output of the latest forward pass with gradient: the features the heads share."""

    def __init__(self, backbone: nn.Module):
        self._features: torch.Tensor | None = None
        self._handle = backbone.register_forward_hook(self._keep)

    def _keep(self, module, args, output) -> None:
        if torch.is_grad_enabled():
            self._features = output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]

    def take(self) -> torch.Tensor:
        features, self._features = self._features, None
        if features is None:
            raise RuntimeError("the backbone ran no forward pass with gradient since the features were last taken")
        return features

    def remove(self) -> None:
        self._handle.remove()
        self._features = None


def representation_loss(
    method: GramianWeighting, losses: StepLosses, features: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """
    The loss to back-propagate in `representation` space, and the weights it applies.

    Its value is `sum_k p_k L_k`; its gradient reaches each head as `p_k grad L_k` and the backbone
    as `sum_k w_k grad L_k`, where `w` comes from the Gramian of the features' per-task gradients.
    """
    task_names = method.task_names
    rows = []
    for name in losses.ran:
        (gradient,) = torch.autograd.grad(
            losses.local[task_names.index(name)], features, retain_graph=True, allow_unused=True
        )
        rows.append(torch.zeros_like(features) if gradient is None else gradient)
    jacobian = torch.stack(rows).flatten(1).float()  # (K', B * T * D): this rank's images
    embedding = task_embedding(task_names, losses.ran, jacobian)
    gramian = all_reduce_sum(embedding @ (jacobian @ jacobian.T) @ embedding.T) / world_size() ** 2
    weights = gramian_weights(method, gramian, losses.present)
    priors = method.prior_weights(losses.present)
    # Rerouting the features' gradient from sum_k p_k g_k to sum_k w_k g_k adds <features, delta>
    # to the loss's gradient and nothing to its value.
    delta = ((weights - priors) @ embedding @ jacobian).view_as(features).to(features.dtype)
    reroute = (features * delta).sum() - (features.detach() * delta).sum()
    return (priors * losses.local).sum() + reroute, weights


def parameter_space_backward(
    method: GramianWeighting,
    losses: StepLosses,
    shared: Sequence[nn.Parameter],
    heads: Sequence[nn.Parameter],
    scale: float = 1.0,
) -> torch.Tensor:
    """
    Writes the gradients of a `parameters`-space step into `.grad` (times `scale`, for gradient
    accumulation): `sum_k w_k g_k` for the `shared` parameters, `sum_k p_k grad L_k` for the `heads`,
    both averaged over the ranks. Returns the weights. Call it outside DDP's own gradient sync.
    """
    task_names = method.task_names
    ran = [task_names.index(name) for name in losses.ran]
    head_grads = [None] * len(heads)
    if heads:
        head_loss = (method.prior_weights(losses.present) * losses.local).sum()
        head_grads = torch.autograd.grad(head_loss, heads, retain_graph=True, allow_unused=True)
    head_size = sum(g.numel() for g in head_grads if g is not None)
    # One buffer for every task's shared gradient and the heads' gradient: one all-reduce, no copies.
    size = sum(p.numel() for p in shared)
    packed = losses.local.new_zeros(len(ran) * size + head_size, dtype=torch.float32)
    reached = [False] * len(shared)
    for row, task in enumerate(ran):
        last = row == len(ran) - 1
        grads = torch.autograd.grad(losses.local[task], shared, retain_graph=not last, allow_unused=True)
        offset = row * size
        for index, (g, p) in enumerate(zip(grads, shared, strict=True)):
            if g is not None:
                packed[offset : offset + p.numel()] = g.reshape(-1)
                reached[index] = True
            offset += p.numel()
    offset = len(ran) * size
    for g in head_grads:
        if g is not None:
            packed[offset : offset + g.numel()] = g.reshape(-1)
            offset += g.numel()
    all_reduce_sum(packed).div_(world_size())

    jacobian = packed[: len(ran) * size].view(len(ran), size)
    embedding = task_embedding(task_names, losses.ran, jacobian)
    weights = gramian_weights(method, embedding @ (jacobian @ jacobian.T) @ embedding.T, losses.present)
    combined = (weights @ embedding) @ jacobian
    used = [p for p, is_used in zip(shared, reached, strict=True) if is_used]
    _accumulate(used, _used_pieces(combined, shared, reached), scale)
    offset = len(ran) * size
    for p, g in zip(heads, head_grads, strict=True):
        if g is not None:
            _accumulate([p], [packed[offset : offset + p.numel()]], scale)
            offset += p.numel()
    return weights


def _used_pieces(flat: torch.Tensor, parameters: Sequence[nn.Parameter], used: Sequence[bool]) -> list[torch.Tensor]:
    pieces, offset = [], 0
    for p, is_used in zip(parameters, used, strict=True):
        if is_used:
            pieces.append(flat[offset : offset + p.numel()])
        offset += p.numel()
    return pieces


def _accumulate(parameters: Sequence[nn.Parameter], flats: Sequence[torch.Tensor], scale: float) -> None:
    for p, flat in zip(parameters, flats, strict=True):
        piece = (flat * scale).view_as(p).to(p.dtype)
        if p.grad is None:
            p.grad = piece
        else:
            p.grad.add_(piece)


__all__ = ["GRADIENT_SPACES", "FeatureTap", "gramian_weights", "parameter_space_backward", "representation_loss"]
