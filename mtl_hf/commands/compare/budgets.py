"""The runs of a comparison: for every seed, one single-task model per task (the baselines) and one
multi-task model per balancing method, with the steps the budget gives each; a sweep (`equal_lr_sweep`,
`static_sweep`) is several multi-task runs, of which the validation rows pick one."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ...utils.validation import check_choice

BUDGETS = ("per-task", "total", "convergence")

SINGLE_TASK = "single-task"

LR_FACTORS = (1 / 3, 1.0, 3.0)
"""The equal-weights learning-rate sweep: the recipe's rate times each factor."""

STATIC_GRID = (1 / 3, 1.0, 3.0)
STATIC_CANDIDATES = 4
"""The static-weight sweep: equal weights and this many weight vectors drawn (fixed seed) from STATIC_GRID^K."""

SWEEPS = {
    "equal_lr_sweep": f"equal weights, learning rate x {', '.join(f'{f:.2g}' for f in LR_FACTORS)}",
    "static_sweep": f"static weights: equal and {STATIC_CANDIDATES} drawn from {{1/3, 1, 3}} per task",
}
"""Tuned baselines (Xin et al. 2022; Kurin et al. 2022): each trains every candidate and reports the one with the
best validation delta_m; its cost is all of them together."""


@dataclass(frozen=True)
class PlannedRun:
    """One model to train: a single-task baseline (`method` is None) or a multi-task model with `method`.

    `learning_rate` (a sweep's candidate: None keeps the recipe's) and `weights` (static weights, task -> weight)
    vary a run within a sweep; `early_stopping` trains up to `max_steps` and stops on the validation score."""

    tasks: tuple[str, ...]
    method: str | None
    seed: int
    max_steps: int
    learning_rate: float | None = None
    weights: tuple[tuple[str, float], ...] | None = None
    early_stopping: bool = False

    @property
    def variant(self) -> str:
        """What sets this run apart from the method's plain run ('' for the plain run)."""
        parts = []
        if self.learning_rate is not None:
            parts.append(f"lr-{self.learning_rate:.3g}")
        if self.weights is not None:
            parts.append("w-" + "-".join(f"{weight:.2g}" for _, weight in self.weights))
        return "_".join(parts)

    @property
    def name(self) -> str:
        if self.method is None:
            return f"single-{self.tasks[0]}"
        return f"multi-{self.method}" + (f"~{self.variant}" if self.variant else "")

    @property
    def folder(self) -> str:
        return f"runs/{self.name}/seed-{self.seed}"


def sweep_candidates(sweep: str, task_names: Sequence[str], learning_rate: float) -> list[dict]:
    """The (method, learning_rate, weights) of each candidate of `sweep`; the first is the method's plain run."""
    if sweep == "equal_lr_sweep":
        return [
            {"method": "equal", "learning_rate": None if factor == 1.0 else learning_rate * factor, "weights": None}
            for factor in sorted(LR_FACTORS, key=lambda factor: factor != 1.0)
        ]
    if sweep == "static_sweep":
        grid = [vector for vector in itertools.product(STATIC_GRID, repeat=len(task_names)) if len(set(vector)) > 1]
        picked = np.random.default_rng(0).choice(len(grid), size=min(STATIC_CANDIDATES, len(grid)), replace=False)
        weights = [tuple(zip(task_names, grid[index], strict=True)) for index in sorted(picked)]
        return [{"method": "equal", "learning_rate": None, "weights": None}] + [
            {"method": "static", "learning_rate": None, "weights": vector} for vector in weights
        ]
    raise ValueError(f"unknown sweep {sweep!r}")


def plan_runs(
    task_names: Sequence[str],
    methods: Sequence[str],
    seeds: Sequence[int],
    steps: int,
    budget: str,
    learning_rate: float = 0.0,
) -> list[PlannedRun]:
    """Every run of the comparison, seed by seed: the K baselines first, then each method's run(s), once each."""
    check_choice("budget", budget, BUDGETS)
    single_steps = max(1, round(steps / len(task_names))) if budget == "total" else steps
    stop_early = budget == "convergence"
    runs: list[PlannedRun] = []
    for seed in seeds:
        runs += [PlannedRun((task,), None, seed, single_steps, early_stopping=stop_early) for task in task_names]
        for method in methods:
            candidates = (
                sweep_candidates(method, task_names, learning_rate)
                if method in SWEEPS
                else [{"method": method, "learning_rate": None, "weights": None}]
            )
            for candidate in candidates:
                run = PlannedRun(tuple(task_names), seed=seed, max_steps=steps, early_stopping=stop_early, **candidate)
                if run not in runs:
                    runs.append(run)
    return runs


def budget_rule(budget: str, steps: int, num_tasks: int, *, patience: int = 0, eval_steps: int = 0) -> str:
    if budget == "per-task":
        return (
            f"per-task: every model trains {steps} optimizer steps, so one multi-task model costs about "
            f"1/{num_tasks} of the {num_tasks} single-task models together"
        )
    if budget == "convergence":
        return (
            f"convergence: every model trains until its own validation score (the mean over its tasks of the "
            f"score relative to chance) has not improved for {patience} evaluations, one every {eval_steps} "
            f"steps, at most {steps} steps; its best checkpoint is restored and scored on the test rows"
        )
    return (
        f"total: the multi-task model trains {steps} steps and each of the {num_tasks} single-task models "
        f"{max(1, round(steps / num_tasks))}, so the baselines together cost what one multi-task model "
        "costs"
    )


__all__ = ["BUDGETS", "SINGLE_TASK", "SWEEPS", "PlannedRun", "budget_rule", "plan_runs", "sweep_candidates"]
