"""The comparison as a Markdown table (a row per method, a column per task, then delta_m and cost) and as a
plot of delta_m against training time."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ...errors import missing_extra
from .budgets import SINGLE_TASK


def markdown_table(comparison: Mapping[str, Any]) -> str:
    """The comparison as a Markdown table: a row per method, a column per task, then delta_m and cost."""
    settings, summary = comparison["settings"], comparison["summary"]
    tasks = settings["tasks"]
    num_seeds = len(settings["seeds"])
    weak = comparison.get("weak_baselines") or {}
    spread = num_seeds > 1  # one seed has no spread to show
    header = [
        "method",
        *(
            f"{task} {metric}{' (at chance, left out of delta_m)' if task in weak else ''}"
            for task, metric in tasks.items()
        ),
        "delta_m % (lower is better)",
        "steps",
        "train s",
        "samples/s",
        "peak MB",
        "time vs single-task",
    ]
    memory = {
        "cpu-rss": "the process's peak resident memory (sampled)",
        "cuda-allocated": "peak CUDA memory allocated",
    }.get((comparison.get("runs") or [{}])[0].get("memory_kind"), "peak memory")
    lines = [
        f"Budget: {settings['budget_rule']}. Scored on the recipe's evaluation rows: "
        f"{settings.get('scored_rows', 'not recorded')}. "
        f"Seeds: {num_seeds} ({', '.join(map(str, settings['seeds']))}); "
        f"{'scores are mean +- std over seeds' if spread else 'one seed, so no spread: a second seed may differ'}; "
        "delta_m is paired by seed against the single-task models; "
        "steps and train s: one model's optimizer steps and training time (the single-task row: its models "
        f"together; a sweep: all its candidates together); peak MB: {memory}.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    leaders = best_rows(summary) if spread else set()
    for name, row in summary.items():
        label = f"single-task ({len(tasks)} models)" if name == SINGLE_TASK else name
        if "picked" in row:
            label = f"{name} ({row['candidates']} runs; picked {', '.join(row['picked'])})"
        delta = "0 (reference)" if name == SINGLE_TASK else _pm(row["delta_m"], 2, spread, signed=True)
        if name in leaders:
            delta = f"**{delta}**" if len(leaders) == 1 else f"{delta} (tied)"
        cells = [
            label,
            *(_pm(row["scores"][task], 3, spread) for task in tasks),
            delta,
            f"{row['steps']['mean']:.0f}" if "steps" in row else "n/a",
            _pm(row["train_seconds"], 1, spread),
            f"{row['train_samples_per_second']:.0f}",
            f"{row['peak_memory_mb']:.0f}",
            f"{row['time_vs_single_task']:.2f}x",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if settings.get("budget") == "convergence" and comparison.get("runs"):
        lines += ["", cap_share_line(comparison["runs"])]
    if not spread:
        lines += ["", "No row is marked best: one seed has no spread to tell a difference from noise."]
    elif len(leaders) > 1:
        lines += [
            "",
            f"Tied for the lowest delta_m: {', '.join(sorted(leaders))} (their mean +- std overlap that of the lowest "
            "mean, so the seeds do not separate them).",
        ]
    sweeps = settings.get("sweeps") or {}
    if sweeps:
        lines += ["", "Sweeps (each picks, per seed, its candidate with the best delta_m on the validation rows):"]
        lines += [f"- {name}: {description}" for name, description in sweeps.items()]
    if weak:
        lines += ["", "Left out of delta_m, as a relative change against a model that learnt nothing measures nothing:"]
        lines += [f"- {task}: {reason}" for task, reason in weak.items()]
        with_them = ", ".join(
            f"{name} {_pm(row['delta_m_all_tasks'], 2, spread, signed=True)}"
            for name, row in summary.items()
            if name != SINGLE_TASK
        )
        lines.append(f"- delta_m % with them: {with_them}")
    return "\n".join(lines)


CAP_SHARE_LIMIT = 0.10
"""Under the convergence budget, the share of runs that may end at the step cap rather than by the patience rule
before the comparison stops being one "to convergence"."""


def cap_share_line(runs: list[Mapping[str, Any]]) -> str:
    """How many runs of each kind ended at the step cap (not stopped by the patience rule), and whether the share is
    under `CAP_SHARE_LIMIT`, so that a reader knows whether the cap or convergence ended them."""
    counts: dict[str, list[int]] = {}
    for run in runs:
        tally = counts.setdefault(run["method"], [0, 0])
        tally[0] += int(run["steps"] >= run["max_steps"])
        tally[1] += 1
    capped, total = sum(tally[0] for tally in counts.values()), sum(tally[1] for tally in counts.values())
    share = capped / total
    per_kind = ", ".join(f"{name} {hit} of {of}" for name, (hit, of) in counts.items())
    verdict = (
        f"under {CAP_SHARE_LIMIT:.0%}: the patience rule, not the cap, ended the runs"
        if share < CAP_SHARE_LIMIT
        else f"NOT under {CAP_SHARE_LIMIT:.0%}: the cap ended these runs, not convergence; raise max_steps (or "
        "num_train_epochs) until fewer reach it"
    )
    return f"Runs that reached the step cap: {per_kind}; {capped} of {total} in all ({share:.0%}), {verdict}."


def best_rows(summary: Mapping[str, Any]) -> set[str]:
    """The methods to mark best: the one with the lowest mean delta_m, alone where its mean + std lies below every
    other method's mean - std; otherwise it and every method whose spread overlaps its own (a tie)."""
    rows = {
        name: row["delta_m"]
        for name, row in summary.items()
        if name != SINGLE_TASK and not math.isnan(row["delta_m"]["mean"])
    }
    if not rows:
        return set()
    best = min(rows, key=lambda name: rows[name]["mean"])
    reach = rows[best]["mean"] + rows[best]["std"]
    return {name for name, delta in rows.items() if delta["mean"] - delta["std"] <= reach}


def _pm(value: Mapping[str, float], digits: int, spread: bool = True, signed: bool = False) -> str:
    if math.isnan(value["mean"]):
        return "n/a (a single-task score is 0, or every task is at chance)"
    sign = "+" if signed else ""
    if not spread:
        return f"{value['mean']:{sign}.{digits}f}"
    return f"{value['mean']:{sign}.{digits}f} +- {value['std']:.{digits}f}"


def plot_comparison(comparison: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """delta_m (mean and std over seeds) against training time, one point per method."""
    try:
        import matplotlib
    except ImportError:
        raise missing_extra("the comparison plot", "plots", "matplotlib") from None

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = comparison["summary"]
    figure, axis = plt.subplots(figsize=(8, 5.5))
    # 21 methods: tab20 and tab20b together give 40 distinct colours, where tab10 alone would repeat
    colours = plt.get_cmap("tab20").colors + plt.get_cmap("tab20b").colors
    methods = [name for name in summary if name != SINGLE_TASK]
    for index, name in enumerate(methods):
        seconds, delta = summary[name]["train_seconds"], summary[name]["delta_m"]
        colour = colours[index % len(colours)]
        axis.errorbar(
            seconds["mean"], delta["mean"], xerr=seconds["std"], yerr=delta["std"], fmt="o", capsize=3, color=colour
        )
        # Labels alternate above, level and below: methods with equal results (equal, static) sit on one point.
        axis.annotate(
            name,
            (seconds["mean"], delta["mean"]),
            textcoords="offset points",
            xytext=(5, 8 - 8 * (index % 3)),
            fontsize=8,
        )
    single = summary[SINGLE_TASK]["train_seconds"]["mean"]
    axis.axvline(
        single,
        color="grey",
        linestyle="--",
        label=f"{len(comparison['settings']['tasks'])} single-task models together ({single:.0f} s)",
    )
    axis.axhline(0.0, color="grey", linewidth=0.8, label="single-task score (delta_m = 0)")
    axis.set_xlabel("training time per model (s)")
    axis.set_ylabel("delta_m vs single-task (%), lower is better")
    settings = comparison["settings"]
    axis.set_title(
        f"{len(settings['tasks'])} tasks, {len(settings['seeds'])} seed(s), budget {settings['budget']}", fontsize=10
    )
    axis.legend(fontsize=8, loc="best")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


# -- helpers ---------------------------------------------------------------------------------------


__all__ = ["CAP_SHARE_LIMIT", "best_rows", "cap_share_line", "markdown_table", "plot_comparison"]
