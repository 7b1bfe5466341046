"""What the trainer counts between logging steps, on the device, and reports at each one.

- `TaskLogs`: each task's loss and applied weight (`loss_<task>`, `weight_<task>`), summed on the
  device step by step; `flush` copies the sums to the host once per logging step and averages each
  task over the steps in which it was present (a task absent from every step since has no entry).
- `BadImageTally`: under `bad_image_policy: skip`, the rows served and the photos skipped per source
  (the collator's `image_counts`), summed over the ranks at each logging step (every rank logs at the
  same steps, so the collective lines up) and logged as `bad_images_<source>`; it stops the run when a
  source's share of bad photos passes `max_bad_image_fraction`: past that the data is broken, not dirty.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

import torch

from ..errors import UserError
from ..utils import host
from ..utils.collectives import all_reduce_sum, is_distributed


class TaskLogs:
    def __init__(self, task_names: list[str]):
        self.task_names = list(task_names)
        self._sums: torch.Tensor | None = None  # rows: loss, weight, steps present

    def add(self, losses: torch.Tensor, weights: torch.Tensor, present: torch.Tensor) -> None:
        """Records one step: the task losses (mean over ranks), the weights applied, the present mask."""
        row = torch.stack([losses.detach().float(), weights.detach().float(), present.float()]) * present
        self._sums = row if self._sums is None else self._sums + row

    def flush(self) -> dict[str, float]:
        """`loss_<task>` and `weight_<task>` averaged over the steps the task was present in; then resets."""
        if self._sums is None:
            return {}
        losses, weights, steps = host.to_host(self._sums).tolist()
        self._sums = None
        logs = {}
        for name, loss, weight, count in zip(self.task_names, losses, weights, steps, strict=True):
            if count > 0:
                logs[f"loss_{name}"] = _significant(loss / count)
                logs[f"weight_{name}"] = _significant(weight / count)
        return logs


class BadImageTally:
    """Rows served and images skipped, per source, for the sources in `source_names` (the same on every rank)."""

    def __init__(self, source_names: Sequence[str], max_fraction: float, device: torch.device | str = "cpu"):
        self.source_names, self.max_fraction, self.device = list(source_names), max_fraction, device
        self.served: Counter = Counter()
        self.skipped: Counter = Counter()

    def add(self, counts: Mapping[str, Mapping[str, int]] | None) -> None:
        """Adds a batch's `image_counts` (none when no source skips)."""
        if counts:
            self.served.update(counts["served"])
            self.skipped.update(counts["skipped"])

    def totals(self) -> tuple[dict[str, int], dict[str, int]]:
        """(served, skipped) per source, over all the ranks."""
        local = [[self.served[name], self.skipped[name]] for name in self.source_names]
        if is_distributed():
            summed = host.to_host(all_reduce_sum(torch.tensor(local, dtype=torch.long, device=self.device)))
            local = summed.tolist()
        served = {name: int(row[0]) for name, row in zip(self.source_names, local, strict=True)}
        skipped = {name: int(row[1]) for name, row in zip(self.source_names, local, strict=True)}
        return served, skipped

    def check(self) -> dict[str, int]:
        """`bad_images_<source>` for the logs; raises when a source's share passes `max_fraction`."""
        served, skipped = self.totals()
        for name in self.source_names:
            if served[name] and skipped[name] / served[name] > self.max_fraction:
                raise UserError(
                    f"source {name!r}: {skipped[name]} of {served[name]} images ({skipped[name] / served[name]:.1%}) "
                    f"could not be decoded, more than max_bad_image_fraction {self.max_fraction:g}; the data looks "
                    "broken rather than dirty: check it (bad_image_policy: raise names each file), or raise "
                    "max_bad_image_fraction"
                )
        return {f"bad_images_{name}": skipped[name] for name in self.source_names}


def _significant(value: float, digits: int = 7) -> float:
    return float(f"{value:.{digits}g}")


__all__ = ["BadImageTally", "TaskLogs"]
