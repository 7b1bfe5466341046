"""The two kinds of balancing method, after TorchJD's split between a weighting and its use.

- A `LossWeighting` maps the step's task losses to one weight per task; the trainer minimises
  `sum_k weight_k * loss_k` (plus whatever the method learns itself, as uncertainty weighting does).
- A `GramianWeighting` maps the K x K Gramian of the per-task gradients (`G_ij = g_i . g_j`) to one
  weight per task; the gradient path (`mtl_hf.balancing.gradient_path`) then gives the shared parameters
  `sum_k weight_k * g_k`. Every quantity a gradient method needs (norms, cosines, projections)
  is in the Gramian, so no method ever holds K copies of the parameters' size.

Both see only the tasks present in the step (with at least one target on some rank): an absent
task gets weight 0 and leaves the method's state as it was. Each task's `loss_weight` (its
*prior*) multiplies the weight the method gives it, for every method alike.

Loss methods run on the model's device without reading a value back (no host sync). Gradient
methods solve a K x K problem; they do so on the host, in float64, from one copy of the Gramian
per step (`mtl_hf.utils.host`), and keep any state of theirs there.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import nn

from ..errors import MissingExtraError, UserError


class WeightingMethod(nn.Module):
    """Base class: `task_names` fixes the order of every loss vector, Gramian and weight vector."""

    name: ClassVar[str]
    uses_gradients: ClassVar[bool] = False
    """Weights come from the Gramian of the per-task gradients (a `GramianWeighting`)."""
    paper: ClassVar[str] = ""
    """Short citation, for the methods table."""

    def __init__(self, task_names: list[str]):
        super().__init__()
        if not task_names:
            raise UserError(f"{type(self).__name__} needs at least one task")
        self.task_names = list(task_names)
        # The tasks' loss_weight; not saved with the method's state, it comes from the model's config.
        self.register_buffer("priors", torch.ones(len(self.task_names)), persistent=False)

    @property
    def num_tasks(self) -> int:
        return len(self.task_names)

    @property
    def needs_losses_after_step(self) -> bool:
        """Whether `end_step` wants the step's batches re-evaluated after the optimizer step."""
        return False

    def set_priors(self, priors: Sequence[float]) -> None:
        """Sets each task's prior (its `loss_weight`), which multiplies the weight the method gives it."""
        values = list(priors)
        if len(values) != self.num_tasks:
            raise UserError(f"{len(values)} priors for {self.num_tasks} tasks {self.task_names}")
        for task, value in zip(self.task_names, values, strict=True):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise UserError(f"task {task!r}: loss_weight must be a finite number >= 0, got {value!r}")
        self.priors.copy_(torch.tensor(values, dtype=self.priors.dtype))

    def prior_weights(self, present: torch.Tensor) -> torch.Tensor:
        """Each present task's prior (0 for absent tasks): what the heads' gradients and the logged loss use."""
        return self.priors * present

    def observe(self, losses: torch.Tensor, present: torch.Tensor) -> None:
        """Sees every training micro-batch's task losses (mean over all ranks, detached)."""

    def end_step(self, losses_after: torch.Tensor | None = None, present_after: torch.Tensor | None = None) -> None:
        """Called after every optimizer step (with the step's batches re-evaluated, if it asked for them)."""

    def skip_step(self) -> None:
        """Called instead of `end_step` when the step was skipped (a non-finite loss): forget what it observed."""

    def end_epoch(self) -> None:
        """Called at the end of every training epoch."""


class LossWeighting(WeightingMethod):
    """A method that weighs the task losses."""

    def weights(self, losses: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """The method's weight for each task (0 where absent), from the step's detached task losses."""
        raise NotImplementedError

    def task_weights(self, losses: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """What multiplies each task's loss in this step: the method's weight times the task's prior."""
        return self.weights(losses, present) * self.prior_weights(present)

    def combine(self, losses: torch.Tensor, weights: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """The loss to back-propagate, from the task losses and `task_weights`."""
        return (weights.detach() * losses).sum()


class GramianWeighting(WeightingMethod):
    """A method that weighs the per-task gradients, given their Gramian."""

    uses_gradients = True
    requires: ClassVar[tuple[str, ...]] = ()
    """Modules the method's solver imports; missing ones fail at construction with the install line."""

    def __init__(self, task_names: list[str]):
        super().__init__(task_names)
        missing = [module for module in self.requires if importlib.util.find_spec(module) is None]
        if missing:
            raise MissingExtraError(
                f"weighting {self.name!r} needs {' and '.join(missing)}, which is not installed: "
                f"pip install 'mtl_hf[solvers]' (or pip install {' '.join(missing)})"
            )

    def gramian_weights(self, gramian: torch.Tensor, tasks: tuple[int, ...]) -> torch.Tensor:
        """One weight per row of `gramian` (K' x K', float64, on the host), the Gramian of the present
        tasks, whose indices are `tasks` (stateful methods keep one state per set of tasks)."""
        raise NotImplementedError

    def host_weights(self, gramian: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """The method's weight for each of the K tasks (0 where absent), from the full K x K Gramian on the host."""
        index = present.nonzero().flatten()
        weights = torch.zeros(self.num_tasks, dtype=torch.float64)
        if len(index):
            tasks = tuple(index.tolist())
            weights[index] = self.gramian_weights(gramian[index][:, index], tasks).to(torch.float64)
        return weights


class TorchJDWeighting(GramianWeighting):
    """A `GramianWeighting` whose weights come from a stateless torchjd weighting, set as `self.solver`."""

    solver: nn.Module

    def gramian_weights(self, gramian: torch.Tensor, tasks: tuple[int, ...]) -> torch.Tensor:
        return self.solver(gramian)


def step_generator(seed: int, step: int) -> torch.Generator:
    """A host generator for draw `step` of a run seeded with `seed`: the same on every rank and after resume."""
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def gramian_root(gramian: torch.Tensor) -> torch.Tensor:
    """A K x K matrix `M` with `M @ M.T == gramian`: stands in for the Jacobian where a solver wants a matrix."""
    eigenvalues, eigenvectors = torch.linalg.eigh(gramian)
    return eigenvectors * eigenvalues.clamp_min(0).sqrt()
