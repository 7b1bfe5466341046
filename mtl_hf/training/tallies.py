"""What the trainer counts between logging steps, on the device, and reports at each one.

- `TaskLogs`: each task's loss and applied weight (`loss_<task>`, `weight_<task>`), summed on the
  device step by step; `flush` copies the sums to the host once per logging step and averages each
  task over the steps in which it was present (a task absent from every step since has no entry); with a
  teacher, `loss_distill` too (this rank's distillation term, averaged over the steps).
- `BadImageTally`: under `bad_image_policy: skip`, the photos of each source seen and those that did not
  decode (the collator's `image_counts`), counted as DISTINCT photos, not encounters: a broken photo met in
  every epoch counts once, and the rows seen are at most the source's rows. Combined over the ranks at each
  logging step (every rank logs at the same steps, so the collectives line up) and logged as
  `bad_images_<source>`; it stops the run when a source's share of broken photos among those seen passes
  `max_bad_image_fraction`: past that the data is broken, not dirty.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

import torch

from ..errors import UserError
from ..utils import host
from ..utils.collectives import all_reduce_sum, gather_from_ranks, is_distributed


class TaskLogs:
    def __init__(self, task_names: list[str]):
        self.task_names = list(task_names)
        self._sums: torch.Tensor | None = None  # rows: loss, weight, steps present
        self._distillation: torch.Tensor | None = None  # (sum, steps)

    def add(self, losses: torch.Tensor, weights: torch.Tensor, present: torch.Tensor) -> None:
        """Records one step: the task losses (mean over ranks), the weights applied, the present mask."""
        row = torch.stack([losses.detach().float(), weights.detach().float(), present.float()]) * present
        self._sums = row if self._sums is None else self._sums + row

    def add_distillation(self, term: torch.Tensor) -> torch.Tensor:
        """Records one step's distillation term (`loss_distill`); returns it."""
        row = torch.stack([term.detach().float(), torch.ones_like(term, dtype=torch.float32)])
        self._distillation = row if self._distillation is None else self._distillation + row
        return term

    def flush(self) -> dict[str, float]:
        """`loss_<task>` and `weight_<task>` averaged over the steps the task was present in; then resets."""
        logs = {}
        if self._distillation is not None:
            total, steps = host.to_host(self._distillation).tolist()
            logs["loss_distill"] = _significant(total / steps)
            self._distillation = None
        if self._sums is None:
            return logs
        losses, weights, steps = host.to_host(self._sums).tolist()
        self._sums = None
        for name, loss, weight, count in zip(self.task_names, losses, weights, steps, strict=True):
            if count > 0:
                logs[f"loss_{name}"] = _significant(loss / count)
                logs[f"weight_{name}"] = _significant(weight / count)
        return logs


class BadImageTally:
    """Photos seen and broken, per source of `source_rows` (name -> its rows, None for a stream of unknown size;
    the same on every rank), as distinct photos."""

    def __init__(self, source_rows: Mapping[str, int | None], max_fraction: float, device: torch.device | str = "cpu"):
        self.source_rows, self.max_fraction, self.device = dict(source_rows), max_fraction, device
        self.source_names = list(self.source_rows)
        self.served: Counter = Counter()  # rows served, each time one is served
        self.broken: dict[str, set] = {name: set() for name in self.source_names}  # rows that did not decode

    def add(self, counts: Mapping[str, Mapping] | None) -> None:
        """Adds a batch's `image_counts` (none when no source skips)."""
        if counts:
            self.served.update(counts["served"])
            for name, rows in counts.get("broken_rows", {}).items():
                self.broken[name].update(rows)

    def totals(self) -> tuple[dict[str, int], dict[str, int]]:
        """(photos seen, photos broken) per source, over all the ranks, distinct: a pass over a source serves each
        of its rows once (ranks hold disjoint rows), so the photos seen are the rows served, up to its rows."""
        local = [self.served[name] for name in self.source_names]
        broken = self.broken
        if is_distributed():
            local = host.to_host(all_reduce_sum(torch.tensor(local, dtype=torch.long, device=self.device))).tolist()
            broken = {name: set() for name in self.source_names}
            for part in gather_from_ranks(self.broken, True):  # small: a source with many is stopped early
                for name, rows in part.items():
                    broken[name].update(rows)
        seen = {
            name: int(served if self.source_rows[name] is None else min(served, self.source_rows[name]))
            for name, served in zip(self.source_names, local, strict=True)
        }
        return seen, {name: len(broken[name]) for name in self.source_names}

    def check(self) -> dict[str, int]:
        """`bad_images_<source>` (distinct broken photos) for the logs; raises when a source's share passes
        `max_fraction`."""
        seen, broken = self.totals()
        for name in self.source_names:
            share = broken[name] / seen[name] if seen[name] else 0.0
            if share > self.max_fraction:
                raise UserError(
                    f"source {name!r}: {broken[name]} of the {seen[name]} photos seen ({share:.1%}) "
                    f"could not be decoded, more than max_bad_image_fraction {self.max_fraction:g}; the data looks "
                    "broken rather than dirty: check it (bad_image_policy: raise names each file), or raise "
                    "max_bad_image_fraction"
                )
        return {f"bad_images_{name}": broken[name] for name in self.source_names}


def _significant(value: float, digits: int = 7) -> float:
    return float(f"{value:.{digits}g}")


__all__ = ["BadImageTally", "TaskLogs"]
