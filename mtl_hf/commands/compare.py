"""`mtl-hf compare`: is one multi-task model as good as one model per task, and which balancing helps?

    mtl-hf compare CONFIG.yaml --methods equal,uncertainty,famo,pcgrad,upgrad --seeds 3 [--budget per-task]
    accelerate launch recipes/compare.py CONFIG.yaml --methods equal,famo --seeds 3

From one recipe YAML it trains, for every seed, one single-task model per task (the baselines)
and one multi-task model per balancing method: same backbone, data, schedule and evaluation rows.
Each run is scored with its tasks' main metrics, and each method gets delta_m (Maninis et al.,
2019): the mean over tasks of the relative change of its score against the single-task model of
the same seed, sign-adjusted so that lower is better; negative means multi-task learning helped.

Budget rules (stated in every output):
- `per-task`: every model takes the optimizer steps the recipe gives the multi-task model, so the
  multi-task model costs about 1/K of the K baselines together (the usual setting of the papers);
- `total`: the K baselines share those steps, each taking 1/K of them, so the baselines together
  cost what one multi-task model costs.

Each finished run leaves `runs/<run>/seed-<seed>/result.json` under the output folder and is not
trained again: an interrupted comparison, run again, continues where it stopped. The outputs are
`comparison.json` (every run and the summary), `comparison.md` (the table) and `comparison.png`
(delta_m and its spread over seeds against training time).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import PrinterCallback, set_seed

from ..balancing import WEIGHTING_METHODS
from ..data import ImageTransforms, TaskSource
from ..metrics import PRIMARY_METRIC
from ..training.arguments import MultiTaskTrainingArguments
from ..training.trainer import MultiTaskTrainer, build_task_mixture, planned_optimizer_steps
from .train import DataArguments, ModelArguments, build_model, load_data, merged_task_specs, parse_args

logger = logging.getLogger(__name__)

BUDGETS = ("per-task", "total")
SINGLE_TASK = "single-task"
LOWER_IS_BETTER = frozenset({"mse", "mae", "rmse", "loss"})
"""Metric names where a smaller value is better; delta_m flips their sign."""


# -- the plan --------------------------------------------------------------------------------------


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
    if budget not in BUDGETS:
        raise ValueError(f"unknown budget {budget!r}; use one of {', '.join(BUDGETS)}")
    single_steps = steps if budget == "per-task" else max(1, round(steps / len(task_names)))
    runs = []
    for seed in seeds:
        runs += [PlannedRun((task,), None, seed, single_steps) for task in task_names]
        runs += [PlannedRun(tuple(task_names), method, seed, steps) for method in methods]
    return runs


def budget_rule(budget: str, steps: int, num_tasks: int) -> str:
    if budget == "per-task":
        return (f"per-task: every model trains {steps} optimizer steps, so one multi-task model costs about "
                f"1/{num_tasks} of the {num_tasks} single-task models together")  # fmt: skip
    return (f"total: the multi-task model trains {steps} steps and each of the {num_tasks} single-task models "
            f"{max(1, round(steps / num_tasks))}, so the baselines together cost what one multi-task model "
            "costs")  # fmt: skip


# -- delta_m ---------------------------------------------------------------------------------------


def delta_m(scores: Mapping[str, float], baseline: Mapping[str, float], metrics: Mapping[str, str]) -> float:
    """Maninis et al. (2019)'s delta_m in percent: lower is better, negative beats the baseline.

    `mean_k (-1)^{h_k} (scores_k - baseline_k) / |baseline_k| * 100`, with h_k = 1 where the task's
    metric (`metrics[task]`) is higher-is-better, so that an improvement always counts negative.
    """
    if set(scores) != set(baseline) or set(scores) != set(metrics):
        raise ValueError(f"delta_m needs the same tasks in scores {sorted(scores)}, baseline {sorted(baseline)} "
                         f"and metrics {sorted(metrics)}")  # fmt: skip
    changes = []
    for task, score in scores.items():
        reference = baseline[task]
        if reference == 0:
            raise ValueError(f"delta_m: task {task!r} has a baseline score of 0, so its relative change is undefined")
        sign = 1.0 if metrics[task] in LOWER_IS_BETTER else -1.0
        changes.append(sign * (score - reference) / abs(reference) * 100.0)
    return sum(changes) / len(changes)


# -- running one model -------------------------------------------------------------------------


class PeakMemory:
    """The peak memory of this process while the block runs: CUDA's allocator peak, else sampled RSS."""

    def __init__(self, interval: float = 0.05):
        self.interval, self.peak_mb, self.kind = interval, 0.0, "cpu-rss"
        self._stop = threading.Event()

    def __enter__(self) -> PeakMemory:
        if torch.cuda.is_available():
            self.kind = "cuda-allocated"
            torch.cuda.reset_peak_memory_stats()
            return self
        import psutil

        process = psutil.Process()

        def sample():
            while not self._stop.is_set():
                self.peak_mb = max(self.peak_mb, process.memory_info().rss / 2**20)
                self._stop.wait(self.interval)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.kind == "cuda-allocated":
            self.peak_mb = torch.cuda.max_memory_allocated() / 2**20
            return
        self._stop.set()
        self._thread.join()


def train_and_score(
    run: PlannedRun,
    model_args: ModelArguments,
    train_sources: Sequence[TaskSource],
    eval_sources: Sequence[TaskSource],
    training_args: MultiTaskTrainingArguments,
    *,
    output_dir: Path,
    augment: bool,
) -> dict[str, Any]:
    """Trains the run's model from scratch (or its backbone) and scores it on the evaluation rows."""
    train = _restricted(train_sources, run.tasks)
    evaluation = _restricted(eval_sources, run.tasks)
    missing = [task for task in run.tasks if not any(task in source.task_names for source in evaluation)]
    if missing:
        raise ValueError(f"task(s) {missing} have no evaluation rows; a comparison scores every task: give the "
                         "data an eval_split or an eval_fraction above 0")  # fmt: skip
    args = replace(
        training_args,
        output_dir=str(output_dir),
        seed=run.seed,
        weighting=run.method or "equal",
        weighting_options=training_args.weighting_options if run.method == training_args.weighting else {},
        max_steps=run.max_steps,
        eval_strategy="no",
        save_strategy="no",
        load_best_model_at_end=False,
        push_to_hub=False,
        report_to="none",
        disable_tqdm=True,
        resume_from_checkpoint=None,
    )
    set_seed(run.seed)
    task_specs = merged_task_specs(train)
    model, image_processor = build_model(model_args, task_specs)
    trainer = MultiTaskTrainer(
        model, args, train_dataset=list(train), eval_dataset=list(evaluation), processing_class=image_processor,
        image_transforms=ImageTransforms.from_image_processor(image_processor, train=augment),
    )  # fmt: skip
    trainer.remove_callback(PrinterCallback)  # the progress bar over runs replaces the per-step log lines
    started = time.perf_counter()
    with PeakMemory() as memory:
        train_metrics = trainer.train().metrics
    train_seconds = time.perf_counter() - started
    metrics = trainer.predict(list(evaluation), metric_key_prefix="eval").metrics
    scores = {spec.name: metrics[f"eval_{spec.name}_{PRIMARY_METRIC[spec.type]}"] for spec in task_specs}
    return {
        "run": run.name,
        "method": run.method or SINGLE_TASK,
        "tasks": list(run.tasks),
        "seed": run.seed,
        "steps": trainer.state.global_step,
        "scores": scores,
        "metrics": {key: value for key, value in metrics.items() if isinstance(value, (int, float))},
        "train_seconds": train_seconds,
        "train_samples_per_second": train_metrics["train_samples_per_second"],
        "peak_memory_mb": memory.peak_mb,
        "memory_kind": memory.kind,
    }


def _restricted(sources: Sequence[TaskSource], tasks: Sequence[str]) -> list[TaskSource]:
    """Each source that labels one of `tasks`, labelling only those."""
    restricted = []
    for source in sources:
        kept = [task for task in tasks if task in source.task_names]
        if kept:
            restricted.append(source if kept == source.task_names else source.with_tasks(kept))
    return restricted


# -- the comparison --------------------------------------------------------------------------------


def compare(
    model_args: ModelArguments,
    data_args: DataArguments,
    training_args: MultiTaskTrainingArguments,
    *,
    methods: Sequence[str],
    seeds: int,
    budget: str = "per-task",
    output_dir: str | os.PathLike,
    progress: bool = True,
) -> dict[str, Any]:
    """Runs (or resumes) the comparison and writes comparison.json / .md / .png under `output_dir`."""
    unknown = [method for method in methods if method not in WEIGHTING_METHODS]
    if unknown or not methods:
        raise ValueError(f"unknown balancing method(s) {unknown or methods}; use names from "
                         f"{', '.join(WEIGHTING_METHODS)}")  # fmt: skip
    if seeds < 1:
        raise ValueError(f"--seeds must be at least 1, got {seeds}")
    if model_args.model_name_or_path:
        raise ValueError("compare trains every model from the same start: give backbone or backbone_config, "
                         "not model_name_or_path (a trained multi-task model)")  # fmt: skip
    output_dir = Path(output_dir)

    # The data is loaded once, with the recipe's seed: every run sees the same training and evaluation rows.
    train_sources, eval_sources = load_data(data_args, seed=training_args.seed)
    task_specs = merged_task_specs(train_sources)
    task_names = [spec.name for spec in task_specs]
    metric_of = {spec.name: PRIMARY_METRIC[spec.type] for spec in task_specs}
    steps = planned_optimizer_steps(build_task_mixture(train_sources, training_args), training_args)
    seed_list = [training_args.seed + offset for offset in range(seeds)]
    runs = plan_runs(task_names, methods, seed_list, steps, budget)

    # Decided once, before any training, so that every rank skips the same runs.
    finished = {run: _read_result(output_dir / run.folder) for run in runs}
    finished = {run: result for run, result in finished.items() if result is not None}
    is_main = training_args.process_index == 0
    if is_main and finished:
        print(f"compare: {len(finished)} of {len(runs)} runs already finished in {output_dir}; training the rest")

    results = []
    bar = _progress_bar(len(runs), enabled=progress and is_main)
    with _quiet_libraries():
        for run in runs:
            bar.set_description(f"{run.name} seed {run.seed}")
            result = finished.get(run)
            if result is None:
                result = train_and_score(run, model_args, train_sources, eval_sources, training_args,
                                         output_dir=output_dir / run.folder, augment=data_args.augment)  # fmt: skip
                if is_main:
                    _write_json(output_dir / run.folder / "result.json", result)
            results.append(result)
            bar.update(1)
    bar.close()

    comparison = {
        "settings": {
            "methods": list(methods), "seeds": seed_list, "budget": budget,
            "budget_rule": budget_rule(budget, steps, len(task_names)), "steps": steps,
            "tasks": metric_of, "devices": training_args.world_size,
            "machine": _machine(), "date": time.strftime("%Y-%m-%d"),
        },
        "summary": summarise(results, methods, metric_of),
        "runs": results,
    }  # fmt: skip
    if is_main:
        _write_json(output_dir / "comparison.json", comparison)
        (output_dir / "comparison.md").write_text(markdown_table(comparison) + "\n")
        plot_comparison(comparison, output_dir / "comparison.png")
    return comparison


def summarise(results: Sequence[Mapping[str, Any]], methods: Sequence[str], metrics: Mapping[str, str]) -> dict:
    """Per method (and the single-task baselines): each task's score, delta_m, time and memory over seeds.

    delta_m is paired by seed (each multi-task run against the baselines of its own seed), so its
    spread includes the baselines' own seed-to-seed variation.
    """
    seeds = sorted({result["seed"] for result in results})
    baseline = {seed: {} for seed in seeds}  # seed -> task -> the single-task run's result
    for result in results:
        if result["method"] == SINGLE_TASK:
            baseline[result["seed"]][result["tasks"][0]] = result
    single_seconds = {seed: sum(run["train_seconds"] for run in runs.values()) for seed, runs in baseline.items()}

    summary = {SINGLE_TASK: _aggregate(
        scores=[{task: run["scores"][task] for task, run in baseline[seed].items()} for seed in seeds],
        seconds=list(single_seconds.values()),
        samples_per_second=[run["train_samples_per_second"] for seed in seeds for run in baseline[seed].values()],
        memory=[run["peak_memory_mb"] for seed in seeds for run in baseline[seed].values()],
        deltas=[0.0 for _ in seeds], ratios=[1.0 for _ in seeds],
    )}  # fmt: skip
    for method in methods:
        runs = [result for result in results if result["method"] == method]
        summary[method] = _aggregate(
            scores=[run["scores"] for run in runs],
            seconds=[run["train_seconds"] for run in runs],
            samples_per_second=[run["train_samples_per_second"] for run in runs],
            memory=[run["peak_memory_mb"] for run in runs],
            deltas=[
                _delta_m_or_nan(
                    run["scores"], {task: baseline[run["seed"]][task]["scores"][task] for task in metrics}, metrics
                )
                for run in runs
            ],
            ratios=[run["train_seconds"] / single_seconds[run["seed"]] for run in runs],
        )
    return summary


def _delta_m_or_nan(scores, baseline, metrics) -> float:
    # A baseline score of exactly 0 (a task the single-task model did not learn at all) has no
    # relative change: the table shows n/a for that method rather than ending the comparison.
    zero = [task for task, value in baseline.items() if value == 0]
    if zero:
        logger.warning("delta_m is undefined: the single-task score of %s is 0", zero)
        return math.nan
    return delta_m(scores, baseline, metrics)


def _aggregate(*, scores, seconds, samples_per_second, memory, deltas, ratios) -> dict[str, Any]:
    tasks = scores[0].keys()
    return {
        "scores": {task: _mean_std([score[task] for score in scores]) for task in tasks},
        "delta_m": _mean_std(deltas),
        "train_seconds": _mean_std(seconds),
        "train_samples_per_second": statistics.fmean(samples_per_second),
        "peak_memory_mb": max(memory),
        "time_vs_single_task": statistics.fmean(ratios),
    }


def _mean_std(values: Sequence[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}


# -- outputs ---------------------------------------------------------------------------------------


def markdown_table(comparison: Mapping[str, Any]) -> str:
    """The comparison as a Markdown table: a row per method, a column per task, then delta_m and cost."""
    settings, summary = comparison["settings"], comparison["summary"]
    tasks = settings["tasks"]
    num_seeds = len(settings["seeds"])
    header = ["method", *(f"{task} {metric}" for task, metric in tasks.items()),
              "delta_m % (lower is better)", "train s", "samples/s", "peak MB", "time vs single-task"]  # fmt: skip
    memory = {"cpu-rss": "the process's peak resident memory (sampled)", "cuda-allocated": "peak CUDA memory "
              "allocated"}.get((comparison.get("runs") or [{}])[0].get("memory_kind"), "peak memory")  # fmt: skip
    lines = [
        f"Budget: {settings['budget_rule']}. Seeds: {num_seeds} ({', '.join(map(str, settings['seeds']))}); "
        "scores are mean +- std over seeds; delta_m is paired by seed against the single-task models; "
        f"train s: one model's training time (the single-task row: its models together); peak MB: {memory}.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    deltas = [row["delta_m"]["mean"] for name, row in summary.items() if name != SINGLE_TASK]
    best = min((delta for delta in deltas if not math.isnan(delta)), default=None)
    for name, row in summary.items():
        label = f"single-task ({len(tasks)} models)" if name == SINGLE_TASK else name
        delta = "0 (reference)" if name == SINGLE_TASK else _pm(row["delta_m"], 2, signed=True)
        if name != SINGLE_TASK and row["delta_m"]["mean"] == best:
            delta = f"**{delta}**"
        cells = [label, *(_pm(row["scores"][task], 3) for task in tasks), delta, _pm(row["train_seconds"], 1),
                 f"{row['train_samples_per_second']:.0f}", f"{row['peak_memory_mb']:.0f}",
                 f"{row['time_vs_single_task']:.2f}x"]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _pm(value: Mapping[str, float], digits: int, signed: bool = False) -> str:
    if math.isnan(value["mean"]):
        return "n/a (a single-task score is 0)"
    sign = "+" if signed else ""
    return f"{value['mean']:{sign}.{digits}f} +- {value['std']:.{digits}f}"


def plot_comparison(comparison: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """delta_m (mean and std over seeds) against training time, one point per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = comparison["summary"]
    figure, axis = plt.subplots(figsize=(8, 5.5))
    colours = plt.get_cmap("tab20").colors  # 17 methods: tab10 would repeat colours
    methods = [name for name in summary if name != SINGLE_TASK]
    for index, name in enumerate(methods):
        seconds, delta = summary[name]["train_seconds"], summary[name]["delta_m"]
        colour = colours[index % len(colours)]
        axis.errorbar(seconds["mean"], delta["mean"], xerr=seconds["std"], yerr=delta["std"], fmt="o", capsize=3,
                      color=colour)  # fmt: skip
        # Labels alternate above, level and below: methods with equal results (equal, static) sit on one point.
        axis.annotate(name, (seconds["mean"], delta["mean"]), textcoords="offset points",
                      xytext=(5, 8 - 8 * (index % 3)), fontsize=8)  # fmt: skip
    single = summary[SINGLE_TASK]["train_seconds"]["mean"]
    axis.axvline(single, color="grey", linestyle="--", label=f"{len(comparison['settings']['tasks'])} single-task "
                                                             f"models together ({single:.0f} s)")  # fmt: skip
    axis.axhline(0.0, color="grey", linewidth=0.8, label="single-task score (delta_m = 0)")
    axis.set_xlabel("training time per model (s)")
    axis.set_ylabel("delta_m vs single-task (%), lower is better")
    settings = comparison["settings"]
    axis.set_title(f"{len(settings['tasks'])} tasks, {len(settings['seeds'])} seed(s), budget {settings['budget']}",
                   fontsize=10)  # fmt: skip
    axis.legend(fontsize=8, loc="best")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


# -- helpers ---------------------------------------------------------------------------------------


def _read_result(folder: Path) -> dict[str, Any] | None:
    path = folder / "result.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}); delete it to train that run again") from None


def _write_json(path: Path, value: Any) -> None:
    # Written beside and renamed into place: a run killed mid-write never leaves a half result.
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(value, indent=2) + "\n")
    os.replace(partial, path)


def _machine() -> str:
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"{os.cpu_count()} CPU cores"
    return f"{platform.machine()}, {device}, torch {torch.__version__}, {torch.get_num_threads()} threads"


class _quiet_libraries:
    """Trainer's per-run info logs would bury the progress bar; warnings and errors still show."""

    def __enter__(self):
        self._level = transformers.utils.logging.get_verbosity()
        transformers.utils.logging.set_verbosity_warning()

    def __exit__(self, *exc):
        transformers.utils.logging.set_verbosity(self._level)


def _progress_bar(total: int, *, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="run", disable=not enabled, file=sys.stderr)


# -- command line ----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mtl-hf compare", allow_abbrev=False,
        description="Train single-task baselines and one multi-task model per balancing method from a recipe, "
                    "for several seeds, and tabulate delta_m, time and memory. Other --key value flags "
                    "override the recipe, as for `mtl-hf train`.",
    )  # fmt: skip
    parser.add_argument("config", help="the recipe YAML, e.g. recipes/configs/demo.yaml")
    parser.add_argument("--methods", default="equal,uncertainty,famo,pcgrad,upgrad",
                        help="comma-separated balancing methods (default: %(default)s)")  # fmt: skip
    parser.add_argument("--seeds", type=int, default=3, help="seeds per model: the recipe's seed, +1, ... (default: 3)")
    parser.add_argument("--budget", choices=BUDGETS, default="per-task",
                        help="per-task: every model trains the recipe's steps; total: the single-task models "
                             "share them (default: per-task)")  # fmt: skip
    parser.add_argument("--output_dir",
                        help="where runs and results go (default: the recipe's output_dir + /comparison)")  # fmt: skip
    return parser


def parse_compare_args(argv: Sequence[str]):
    """(compare options, (ModelArguments, DataArguments, MultiTaskTrainingArguments)) from the command line."""
    parser = build_parser()
    if not argv or any(flag in argv for flag in ("-h", "--help")):
        parser.print_help()
        raise SystemExit(0 if argv else 2)
    options, recipe_flags = parser.parse_known_args(list(argv))
    options.methods = [method.strip() for method in options.methods.split(",") if method.strip()]
    return options, parse_args([options.config, *recipe_flags])


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    options, (model_args, data_args, training_args) = parse_compare_args(list(sys.argv[1:] if argv is None else argv))
    output_dir = options.output_dir or os.path.join(training_args.output_dir, "comparison")
    comparison = compare(model_args, data_args, training_args, methods=options.methods, seeds=options.seeds,
                         budget=options.budget, output_dir=output_dir)  # fmt: skip
    if training_args.process_index == 0:
        print("\n" + markdown_table(comparison))
        print(f"\ncomparison.json, comparison.md and comparison.png written to {output_dir}/")
    return comparison


__all__ = ["BUDGETS", "PlannedRun", "compare", "delta_m", "markdown_table", "plan_runs", "plot_comparison", "summarise"]


if __name__ == "__main__":
    main()
