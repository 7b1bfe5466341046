"""Running a comparison: the data loaded once, each planned run trained and scored (or read back where an
earlier, interrupted comparison finished it), then the summary, the table and the plot written."""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import PrinterCallback, set_seed

from ...balancing import WEIGHTING_METHODS
from ...data.sources import TaskSource
from ...data.transforms import ImageTransforms
from ...errors import UserError, missing_extra
from ...metrics import PRIMARY_METRIC
from ...metrics.scoring import chance_scores
from ...training.arguments import MultiTaskTrainingArguments
from ...training.plan import build_task_mixture, planned_optimizer_steps
from ...training.trainer import MultiTaskTrainer
from ...utils.memory import PeakMemory
from ..recipe import DataArguments, ModelArguments, build_model, load_data, recipe_task_specs
from .plan import SINGLE_TASK, PlannedRun, budget_rule, plan_runs
from .report import markdown_table, plot_comparison
from .statistics import summarise, weak_baselines


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
        raise UserError(
            f"task(s) {missing} have no evaluation rows; a comparison scores every task: give the "
            "data an eval_split or an eval_fraction above 0"
        )
    args = _run_arguments(run, training_args, output_dir)
    set_seed(run.seed)
    task_specs = recipe_task_specs(train)
    model, image_processor = build_model(model_args, task_specs)
    trainer = MultiTaskTrainer(
        model,
        args,
        train_dataset=list(train),
        eval_dataset=list(evaluation),
        processing_class=image_processor,
        image_transforms=ImageTransforms.from_image_processor(image_processor, train=augment),
    )
    trainer.remove_callback(PrinterCallback)  # the progress bar over runs replaces the per-step log lines
    started = time.perf_counter()
    with PeakMemory() as memory:
        train_metrics = trainer.train().metrics
    train_seconds = time.perf_counter() - started
    prediction = trainer.predict(list(evaluation), metric_key_prefix="eval")
    metrics = prediction.metrics
    chance = chance_scores(trainer.task_specs, prediction.label_ids, args.multilabel_threshold)
    scores = {spec.name: metrics[f"eval_{spec.name}_{PRIMARY_METRIC[spec.type]}"] for spec in task_specs}
    return {
        "run": run.name,
        "method": run.method or SINGLE_TASK,
        "tasks": list(run.tasks),
        "seed": run.seed,
        "steps": trainer.state.global_step,
        "scores": scores,
        "chance": {spec.name: chance[f"eval_{spec.name}_{PRIMARY_METRIC[spec.type]}"] for spec in task_specs},
        "metrics": {key: value for key, value in metrics.items() if isinstance(value, (int, float))},
        "train_seconds": train_seconds,
        "train_samples_per_second": train_metrics["train_samples_per_second"],
        "peak_memory_mb": memory.peak_mb,
        "memory_kind": memory.kind,
    }


def _run_arguments(run: PlannedRun, training_args: MultiTaskTrainingArguments, output_dir: Path):
    """The recipe's training arguments for one run: its seed, method and steps; no evaluation, saving or push."""
    return replace(
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
    _check_options(model_args, methods, seeds)
    output_dir = Path(output_dir)

    # The data is loaded once, with the recipe's seed: every run sees the same training and evaluation rows.
    train_sources, eval_sources = load_data(data_args, seed=training_args.seed)
    task_specs = recipe_task_specs(train_sources)
    task_names = [spec.name for spec in task_specs]
    metric_of = {spec.name: PRIMARY_METRIC[spec.type] for spec in task_specs}
    steps = planned_optimizer_steps(build_task_mixture(train_sources, training_args), training_args)
    seed_list = [training_args.seed + offset for offset in range(seeds)]
    runs = plan_runs(task_names, methods, seed_list, steps, budget)

    def train(run: PlannedRun) -> dict[str, Any]:
        return train_and_score(
            run,
            model_args,
            train_sources,
            eval_sources,
            training_args,
            output_dir=output_dir / run.folder,
            augment=data_args.augment,
        )

    is_main = training_args.process_index == 0
    results = _run_all(runs, train, output_dir, is_main=is_main, progress=progress)
    weak = weak_baselines(results, metric_of)
    comparison = {
        "settings": {
            "methods": list(methods),
            "seeds": seed_list,
            "budget": budget,
            "budget_rule": budget_rule(budget, steps, len(task_names)),
            "steps": steps,
            "tasks": metric_of,
            "devices": training_args.world_size,
            "machine": _machine(),
            "date": time.strftime("%Y-%m-%d"),
        },
        "weak_baselines": weak,
        "summary": summarise(results, methods, metric_of, left_out=list(weak)),
        "runs": results,
    }
    if is_main:
        _write_json(output_dir / "comparison.json", comparison)
        (output_dir / "comparison.md").write_text(markdown_table(comparison) + "\n")
        plot_comparison(comparison, output_dir / "comparison.png")
    return comparison


def _check_options(model_args: ModelArguments, methods: Sequence[str], seeds: int) -> None:
    unknown = [method for method in methods if method not in WEIGHTING_METHODS]
    if unknown or not methods:
        raise UserError(
            f"unknown balancing method(s) {unknown or methods}; use names from {', '.join(WEIGHTING_METHODS)}"
        )
    if importlib.util.find_spec("matplotlib") is None:  # before hours of training, not after
        raise missing_extra("mtl-hf compare (its comparison.png)", "plots", "matplotlib")
    if seeds < 1:
        raise UserError(f"--seeds must be at least 1, got {seeds}")
    if model_args.model_name_or_path:
        raise UserError(
            "compare trains every model from the same start: give backbone or backbone_config, "
            "not model_name_or_path (a trained multi-task model)"
        )


def _run_all(runs: Sequence[PlannedRun], train, output_dir: Path, *, is_main: bool, progress: bool) -> list[dict]:
    """Every run's result: read back where an earlier comparison finished it, else trained and saved."""
    # Decided once, before any training, so that every rank skips the same runs.
    finished = {run: _read_result(output_dir / run.folder) for run in runs}
    finished = {run: result for run, result in finished.items() if result is not None}
    if is_main and finished:
        print(f"compare: {len(finished)} of {len(runs)} runs already finished in {output_dir}; training the rest")
    results = []
    bar = _progress_bar(len(runs), enabled=progress and is_main)
    with _quiet_libraries():
        for run in runs:
            bar.set_description(f"{run.name} seed {run.seed}")
            result = finished.get(run)
            if result is None:
                result = train(run)
                if is_main:
                    _write_json(output_dir / run.folder / "result.json", result)
            results.append(result)
            bar.update(1)
    bar.close()
    return results


def _read_result(folder: Path) -> dict[str, Any] | None:
    path = folder / "result.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise UserError(f"{path} is not valid JSON ({error}); delete it to train that run again") from None


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


__all__ = ["compare", "train_and_score"]
