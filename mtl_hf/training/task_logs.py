"""Per-task training logs (`loss_<task>`, `weight_<task>`), summed on the device between logging steps.

Each step adds its row on the device; `flush` copies the sums to the host once per logging step
and averages each task over the steps in which it was present (a task absent from every step
since the last log has no entry).
"""

from __future__ import annotations

import torch

from ..utils import host


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


def _significant(value: float, digits: int = 7) -> float:
    return float(f"{value:.{digits}g}")


__all__ = ["TaskLogs"]
