"""Non-finite task losses: found before the optimizer step, reported, and handled by `nan_policy`.

Each micro-batch's per-task loss means (already reduced over the ranks, so every rank decides
alike) are checked on the device; the verdict of a whole optimizer step is read on the host once,
just before the step. `stop` raises there, before a NaN reaches the weights; `skip_step` drops the
step's gradients, so the optimizer leaves the weights and its moments as they were. Either way the
weighting method never observes a non-finite loss.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

from ..balancing.step_losses import StepLosses
from ..utils import host
from ..utils.validation import check_choice

logger = logging.getLogger(__name__)

NAN_POLICIES = ("stop", "skip_step")
_ROWS_SHOWN = 6
SCALE_RATIO = 100.0
"""At the first step, a task loss more than this many times another's is reported."""


class LossGuard:
    """Watches each micro-batch's task losses and decides, once per optimizer step, whether the step may run."""

    def __init__(self, policy: str, task_names: Sequence[str]):
        self.policy, self.task_names = check_choice("nan_policy", policy, NAN_POLICIES), list(task_names)
        self.skipped_steps = 0
        self._finite: list[torch.Tensor] = []
        self._means: list[torch.Tensor] = []
        self._present: list[torch.Tensor] = []
        self._rows: list[Sequence[str] | None] = []
        self._scales_checked = False

    @staticmethod
    def finite_present(losses: StepLosses) -> torch.Tensor:
        """The tasks with targets whose loss is finite: what the weighting may observe."""
        return losses.present & torch.isfinite(losses.mean)

    def watch(self, losses: StepLosses, rows: Sequence[str] | None) -> None:
        """Records a micro-batch's verdict on the device (no host read)."""
        self._finite.append(torch.isfinite(losses.mean) | ~losses.present)
        self._means.append(losses.mean.detach())
        self._present.append(losses.present)
        self._rows.append(rows)

    def step_may_run(self, step: int) -> bool:
        """Called before optimizer step `step` (1-based): True when every task loss of the step was finite.

        Raises `FloatingPointError` under `stop`; under `skip_step` the caller drops the gradients.
        """
        if not self._finite:
            return True
        finite = torch.stack(self._finite)
        if self._scales_checked:
            finite = host.to_host(finite)  # the step's one read: (micro-batches, K)
        else:  # the first step's one read also brings its task losses, to compare their scales
            k = len(self.task_names)
            packed = [finite.float(), torch.stack(self._present).float(), torch.stack(self._means).float()]
            read = host.to_host(torch.cat(packed, dim=1))
            finite = read[:, :k] > 0
            self._warn_of_scales(read[:, 2 * k :], read[:, k : 2 * k] > 0)
            self._scales_checked = True
        means, rows = self._means, self._rows
        self._finite, self._means, self._present, self._rows = [], [], [], []
        if bool(finite.all()):
            return True
        message = self._describe(step, finite, means, rows)
        if self.policy == "stop":
            raise FloatingPointError(
                f"{message}. The weights are those after step {step - 1}; to skip such steps instead, set "
                "nan_policy: skip_step"
            )
        self.skipped_steps += 1
        logger.warning("%s; step skipped (nan_policy: skip_step), %d skipped so far", message, self.skipped_steps)
        return False

    def _warn_of_scales(self, means: torch.Tensor, present: torch.Tensor) -> None:
        """Warns when the first step's task losses differ by more than `SCALE_RATIO`: a task whose loss is on a
        larger scale (a price in dollars beside a cross-entropy) drowns the others' gradients."""
        losses = {}
        for index, name in enumerate(self.task_names):
            values = means[present[:, index], index]
            if len(values) and bool(torch.isfinite(values).all()) and float(values.mean()) > 0:
                losses[name] = float(values.mean())
        if len(losses) < 2:
            return
        largest, smallest = max(losses, key=losses.get), min(losses, key=losses.get)
        if losses[largest] > SCALE_RATIO * losses[smallest]:
            logger.warning(
                "task %r starts with a loss of %.4g, %.0fx task %r's (%.4g): its gradients will drown the other "
                "tasks'. Standardise its targets (target_scaling: standard, the default for regression, with "
                "target_statistics from the data) or lower its loss_weight",
                largest,
                losses[largest],
                losses[largest] / losses[smallest],
                smallest,
                losses[smallest],
            )

    def _describe(self, step, finite, means, rows) -> str:
        first = next(index for index in range(finite.shape[0]) if not bool(finite[index].all()))
        values = host.to_host(means[first])
        tasks = [name for name, ok in zip(self.task_names, finite[first].tolist(), strict=True) if not ok]
        shown = ", ".join(f"{name!r} ({values[self.task_names.index(name)].item():g})" for name in tasks)
        batch_rows = rows[first] or []
        listed = ", ".join(batch_rows[:_ROWS_SHOWN]) + (
            f", ... ({len(batch_rows)} rows)" if len(batch_rows) > _ROWS_SHOWN else ""
        )
        # The losses are reduced over the ranks, so the culprit rows may be on any rank: each names its own.
        where = f"; this rank's batch holds rows {listed}" if batch_rows else ""
        plural = "s" if len(tasks) > 1 else ""
        return f"step {step}: non-finite loss in task{plural} {shown}{where}"


__all__ = ["NAN_POLICIES", "LossGuard"]
