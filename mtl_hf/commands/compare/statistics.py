"""delta_m (Maninis et al., 2019) and the summary over seeds: each method's scores, delta_m against the
single-task models of the same seed, time and memory."""

from __future__ import annotations

import logging
import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from ...errors import UserError
from ...metrics.scoring import at_or_below_chance
from .budgets import SINGLE_TASK, SWEEPS

logger = logging.getLogger(__name__)

LOWER_IS_BETTER = frozenset({"mse", "mae", "rmse", "loss"})
"""Metric names where a smaller value is better; delta_m flips their sign."""

COMPARE_METRIC = {"classification": "accuracy", "multilabel": "micro_f1", "regression": "mae"}
"""The score each task type enters delta_m with. Regression uses the mean absolute error, as the multi-task
literature does for depth and other dense regressions, not R^2: delta_m divides by the baseline's score, and a
single-task model that learnt little has an R^2 near 0 (a relative change of thousands of percent from a few
hundredths), while its MAE stays near the spread of the targets, a positive number the change is measured against."""


# -- the plan --------------------------------------------------------------------------------------


def delta_m(scores: Mapping[str, float], baseline: Mapping[str, float], metrics: Mapping[str, str]) -> float:
    """Maninis et al. (2019)'s delta_m in percent: lower is better, negative beats the baseline.

    `mean_k (-1)^{h_k} (scores_k - baseline_k) / |baseline_k| * 100`, with h_k = 1 where the task's
    metric (`metrics[task]`) is higher-is-better, so that an improvement always counts negative.
    """
    if set(scores) != set(baseline) or set(scores) != set(metrics):
        raise UserError(
            f"delta_m needs the same tasks in scores {sorted(scores)}, baseline {sorted(baseline)} "
            f"and metrics {sorted(metrics)}"
        )
    changes = []
    for task, score in scores.items():
        reference = baseline[task]
        if reference == 0:
            raise UserError(f"delta_m: task {task!r} has a baseline score of 0, so its relative change is undefined")
        sign = 1.0 if metrics[task] in LOWER_IS_BETTER else -1.0
        changes.append(sign * (score - reference) / abs(reference) * 100.0)
    return sum(changes) / len(changes)


def weak_baselines(results: Sequence[Mapping[str, Any]], metrics: Mapping[str, str]) -> dict[str, str]:
    """Tasks whose single-task model (mean over seeds) scored at or below chance on the VALIDATION rows, with why:
    a relative change against a model that learnt nothing measures nothing, and can swamp delta_m. Decided on
    validation rows, as every other choice of the comparison is, so that the test rows choose nothing; without
    validation rows no task is left out."""
    weak = {}
    for task, metric in metrics.items():
        runs = [
            run
            for run in results
            if run["method"] == SINGLE_TASK
            and run["tasks"] == [task]
            and task in (run.get("validation_chance") or {})
            and task in (run.get("validation_scores") or {})
        ]
        if not runs:
            continue  # no validation rows (or results written before they were scored against chance)
        score = statistics.fmean(run["validation_scores"][task] for run in runs)
        chance = statistics.fmean(run["validation_chance"][task] for run in runs)
        if at_or_below_chance(score, chance, lower_is_better=metric in LOWER_IS_BETTER):
            weak[task] = f"single-task validation {metric} {score:.3f} is at or below chance {chance:.3f}"
    return weak


def summarise(
    results: Sequence[Mapping[str, Any]],
    methods: Sequence[str],
    metrics: Mapping[str, str],
    left_out: Sequence[str] = (),
) -> dict:
    """Per method (and the single-task baselines): each task's score, delta_m, steps, time and memory over seeds.

    delta_m is paired by seed (each multi-task run against the baselines of its own seed), so its
    spread includes the baselines' own seed-to-seed variation. Tasks in `left_out` (see `weak_baselines`) are
    not in delta_m; `delta_m_all_tasks` then gives it with them. A sweep's row is, per seed, the candidate with
    the best delta_m on the validation rows (`picked`), costed as all its candidates together.
    """
    counted = {task: metric for task, metric in metrics.items() if task not in left_out}
    seeds = sorted({result["seed"] for result in results})
    baseline = {seed: {} for seed in seeds}  # seed -> task -> the single-task run's result
    for result in results:
        if result["method"] == SINGLE_TASK:
            baseline[result["seed"]][result["tasks"][0]] = result
    single_seconds = {seed: sum(run["train_seconds"] for run in runs.values()) for seed, runs in baseline.items()}

    summary = {
        SINGLE_TASK: _aggregate(
            scores=[{task: run["scores"][task] for task, run in baseline[seed].items()} for seed in seeds],
            seconds=list(single_seconds.values()),
            steps=[sum(run.get("steps", 0) for run in baseline[seed].values()) for seed in seeds],
            samples_per_second=[run["train_samples_per_second"] for seed in seeds for run in baseline[seed].values()],
            memory=[run["peak_memory_mb"] for seed in seeds for run in baseline[seed].values()],
            deltas=[0.0 for _ in seeds],
            ratios=[1.0 for _ in seeds],
        )
    }
    for method in methods:
        if method in SWEEPS:
            runs = [_picked(results, method, seed, baseline[seed], counted) for seed in seeds]
        else:
            runs = [result for result in results if result["method"] == method and not result.get("variant")]
        summary[method] = _aggregate(
            scores=[run["scores"] for run in runs],
            seconds=[run["train_seconds"] for run in runs],
            steps=[run.get("steps", 0) for run in runs],
            samples_per_second=[run["train_samples_per_second"] for run in runs],
            memory=[run["peak_memory_mb"] for run in runs],
            deltas=_paired_deltas(runs, baseline, counted),
            ratios=[run["train_seconds"] / single_seconds[run["seed"]] for run in runs],
        )
        if method in SWEEPS:
            summary[method]["picked"] = [run["picked"] for run in runs]
            summary[method]["candidates"] = runs[0]["candidates"] if runs else 0
        if left_out:
            summary[method]["delta_m_all_tasks"] = _mean_std(_paired_deltas(runs, baseline, metrics))
    return summary


def is_sweep_candidate(sweep: str, result: Mapping[str, Any]) -> bool:
    """Whether `result` is one of `sweep`'s candidates (see `plan.sweep_candidates`)."""
    if sweep == "equal_lr_sweep":
        return result["method"] == "equal" and not result.get("weights")
    if sweep == "static_sweep":
        return (result["method"] == "equal" and not result.get("variant")) or (
            result["method"] == "static" and bool(result.get("weights"))
        )
    raise ValueError(f"unknown sweep {sweep!r}")


def _picked(results, sweep: str, seed: int, baselines: Mapping[str, Any], tasks: Mapping[str, str]) -> dict:
    """The candidate of `sweep` (for `seed`) with the lowest delta_m on the validation rows, costed as all its
    candidates together: choosing is part of the method."""
    candidates = [run for run in results if run["seed"] == seed and is_sweep_candidate(sweep, run)]
    if not candidates:
        raise UserError(f"{sweep}: no finished candidate runs for seed {seed}")
    if any(not run.get("validation_scores") for run in [*candidates, *baselines.values()]):
        raise UserError(f"{sweep} picks its candidate on validation rows: give --validation_fraction above 0")

    def validation_delta(run) -> float:
        reference = {task: baselines[task]["validation_scores"][task] for task in tasks}
        value = _delta_m_or_nan({"scores": run["validation_scores"]}, reference, tasks)
        return math.inf if math.isnan(value) else value

    best = min(candidates, key=validation_delta)
    return {
        **best,
        "train_seconds": sum(run["train_seconds"] for run in candidates),
        "steps": sum(run.get("steps", 0) for run in candidates),
        "peak_memory_mb": max(run["peak_memory_mb"] for run in candidates),
        "picked": best.get("variant") or "plain",
        "candidates": len(candidates),
    }


def _paired_deltas(runs, baseline, tasks: Mapping[str, str]) -> list[float]:
    """Each run's delta_m over `tasks` against the single-task models of its seed."""
    return [
        _delta_m_or_nan(run, {task: baseline[run["seed"]][task]["scores"][task] for task in tasks}, tasks)
        for run in runs
    ]


def _delta_m_or_nan(run, baseline, metrics) -> float:
    if not metrics:
        return math.nan  # every task's baseline was at chance: nothing to compare against
    scores = {task: run["scores"][task] for task in metrics}
    # A baseline score of exactly 0 (a task the single-task model did not learn at all) has no
    # relative change: the table shows n/a for that method rather than ending the comparison.
    zero = [task for task, value in baseline.items() if value == 0]
    if zero:
        logger.warning("delta_m is undefined: the single-task score of %s is 0", zero)
        return math.nan
    return delta_m(scores, baseline, metrics)


def _aggregate(*, scores, seconds, steps, samples_per_second, memory, deltas, ratios) -> dict[str, Any]:
    tasks = scores[0].keys()
    return {
        "scores": {task: _mean_std([score[task] for score in scores]) for task in tasks},
        "delta_m": _mean_std(deltas),
        "train_seconds": _mean_std(seconds),
        "steps": _mean_std(steps),
        "train_samples_per_second": statistics.fmean(samples_per_second),
        "peak_memory_mb": max(memory),
        "time_vs_single_task": statistics.fmean(ratios),
    }


def _mean_std(values: Sequence[float]) -> dict[str, float]:
    if any(math.isnan(value) for value in values):  # an undefined delta_m (statistics.stdev fails on NaN)
        return {"mean": math.nan, "std": math.nan}
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}


# -- outputs ---------------------------------------------------------------------------------------


__all__ = ["COMPARE_METRIC", "LOWER_IS_BETTER", "delta_m", "is_sweep_candidate", "summarise", "weak_baselines"]
