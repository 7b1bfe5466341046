"""The runs of a comparison: for every seed, one single-task model per task (the baselines) and one
multi-task model per balancing method, with the steps the budget gives each."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ...utils.validation import check_choice

BUDGETS = ("per-task", "total")


SINGLE_TASK = "single-task"


@dataclass(frozen=True)
class PlannedRun:
    """One model to train: a single-task baseline (`method` is None) or a multi-task model with `method`."""

    tasks: tuple[str, ...]
    method: str | None
    seed: int
    max_steps: int

    @property
    def name(self) -> str:
        return f"single-{self.tasks[0]}" if self.method is None else f"multi-{self.method}"

    @property
    def folder(self) -> str:
        return f"runs/{self.name}/seed-{self.seed}"


def plan_runs(
    task_names: Sequence[str], methods: Sequence[str], seeds: Sequence[int], steps: int, budget: str
) -> list[PlannedRun]:
    """Every run of the comparison, seed by seed: the K baselines first, then one run per method."""
    check_choice("budget", budget, BUDGETS)
    single_steps = steps if budget == "per-task" else max(1, round(steps / len(task_names)))
    runs = []
    for seed in seeds:
        runs += [PlannedRun((task,), None, seed, single_steps) for task in task_names]
        runs += [PlannedRun(tuple(task_names), method, seed, steps) for method in methods]
    return runs


def budget_rule(budget: str, steps: int, num_tasks: int) -> str:
    if budget == "per-task":
        return (
            f"per-task: every model trains {steps} optimizer steps, so one multi-task model costs about "
            f"1/{num_tasks} of the {num_tasks} single-task models together"
        )
    return (
        f"total: the multi-task model trains {steps} steps and each of the {num_tasks} single-task models "
        f"{max(1, round(steps / num_tasks))}, so the baselines together cost what one multi-task model "
        "costs"
    )


# -- delta_m ---------------------------------------------------------------------------------------


__all__ = ["BUDGETS", "SINGLE_TASK", "PlannedRun", "budget_rule", "plan_runs"]
