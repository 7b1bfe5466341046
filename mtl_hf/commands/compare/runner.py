"""Running a comparison: the data loaded once, each planned run trained and scored (or read back where an
earlier, interrupted comparison finished it), then the summary, the table and the plot written."""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import EarlyStoppingCallback, PrinterCallback, set_seed

from ...balancing import WEIGHTING_METHODS
from ...data.selection import hold_out
from ...data.sources import TaskSource
from ...data.transforms import ImageTransforms
from ...errors import UserError, missing_extra
from ...metrics.scoring import chance_scores
from ...training.arguments import MultiTaskTrainingArguments
from ...training.assembly import build_task_mixture, planned_optimizer_steps
from ...training.trainer import MultiTaskTrainer
from ...utils.memory import PeakMemory
from ..recipe import DataArguments, ModelArguments, build_model, load_data, recipe_task_specs
from .budgets import SINGLE_TASK, SWEEPS, PlannedRun, budget_rule, plan_runs
from .report import markdown_table, plot_comparison
from .statistics import COMPARE_METRIC, summarise, weak_baselines


def train_and_score(
    run: PlannedRun,
    model_args: ModelArguments,
    train_sources: Sequence[TaskSource],
    validation_sources: Sequence[TaskSource],
    test_sources: Sequence[TaskSource],
    training_args: MultiTaskTrainingArguments,
    *,
    output_dir: Path,
    augment: bool,
    patience: int = 3,
    eval_steps: int = 1,
) -> dict[str, Any]:
    """Trains the run's model from scratch (or its backbone), early-stopped on the validation rows where the budget
    says so, and scores it on the validation rows (which pick a sweep's candidate) and the test rows (the table)."""
    train = _restricted(train_sources, run.tasks)
    validation = _restricted(validation_sources, run.tasks)
    test = _restricted(test_sources, run.tasks)
    missing = [task for task in run.tasks if not any(task in source.task_names for source in test)]
    if missing:
        raise UserError(
            f"task(s) {missing} have no evaluation rows; a comparison scores every task: give the "
            "data an eval_split or an eval_fraction above 0"
        )
    args = _run_arguments(run, training_args, output_dir, eval_steps)
    set_seed(run.seed)
    task_specs = recipe_task_specs(train)
    model, image_processor = build_model(model_args, task_specs)
    trainer = MultiTaskTrainer(
        model,
        args,
        train_dataset=list(train),
        eval_dataset=list(validation) if validation else None,
        processing_class=image_processor,
        image_transforms=ImageTransforms.from_image_processor(image_processor, train=augment),
        callbacks=[EarlyStoppingCallback(early_stopping_patience=patience)] if run.early_stopping else None,
    )
    trainer.remove_callback(PrinterCallback)  # the progress bar over runs replaces the per-step log lines
    started = time.perf_counter()
    with PeakMemory() as memory:
        train_metrics = trainer.train().metrics
    train_seconds = time.perf_counter() - started
    # The best checkpoint is in the model now (load_best_model_at_end); the folders are not needed any more. Every
    # rank has loaded it before the one that saved them removes them.
    trainer.accelerator.wait_for_everyone()
    if trainer.args.should_save:
        for checkpoint in output_dir.glob("checkpoint-*"):
            shutil.rmtree(checkpoint, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()
    prediction = trainer.predict(list(test), metric_key_prefix="eval")
    metrics = prediction.metrics
    chance = chance_scores(trainer.task_specs, prediction.label_ids, args.multilabel_threshold, metrics=COMPARE_METRIC)
    primary = {spec.name: f"{spec.name}_{COMPARE_METRIC[spec.type]}" for spec in task_specs}
    validation_prediction = trainer.predict(list(validation), metric_key_prefix="validation") if validation else None
    validation_metrics = validation_prediction.metrics if validation_prediction else {}
    validation_chance = (
        chance_scores(
            trainer.task_specs,
            validation_prediction.label_ids,
            args.multilabel_threshold,
            prefix="validation",
            metrics=COMPARE_METRIC,
        )
        if validation_prediction
        else {}
    )
    return {
        "run": run.name,
        "method": run.method or SINGLE_TASK,
        "variant": run.variant,
        "learning_rate": args.learning_rate,
        "weights": dict(run.weights) if run.weights else None,
        "tasks": list(run.tasks),
        "seed": run.seed,
        "steps": trainer.state.global_step,
        "best_step": trainer.state.best_global_step if run.early_stopping else None,
        # (step, validation score) at each evaluation: how fast the run got where (steps to a given score)
        "validation_curve": [
            [entry["step"], entry["eval_relative_score"]]
            for entry in trainer.state.log_history
            if "eval_relative_score" in entry
        ],
        "max_steps": run.max_steps,
        "scores": {task: metrics[f"eval_{key}"] for task, key in primary.items()},
        "validation_scores": {
            task: validation_metrics[f"validation_{key}"]
            for task, key in primary.items()
            if f"validation_{key}" in validation_metrics
        },
        "validation_relative_score": validation_metrics.get("validation_relative_score"),
        "chance": {task: chance[f"eval_{key}"] for task, key in primary.items()},
        "validation_chance": {
            task: validation_chance[f"validation_{key}"]
            for task, key in primary.items()
            if f"validation_{key}" in validation_chance
        },
        "metrics": {key: value for key, value in metrics.items() if isinstance(value, (int, float))},
        "train_seconds": train_seconds,
        "train_samples_per_second": train_metrics["train_samples_per_second"],
        "peak_memory_mb": memory.peak_mb,
        "memory_kind": memory.kind,
    }


def _described(source: TaskSource) -> str:
    """A source as the table's header names it: its split and data where it came from a location."""
    origin = source.context.origin
    where = f"split {origin['split']!r} of {origin['data']}" if origin else source.name
    return f"{where} ({source.num_rows} rows)"


def _run_arguments(run: PlannedRun, training_args: MultiTaskTrainingArguments, output_dir: Path, eval_steps: int):
    """The recipe's training arguments for one run: its seed, method, learning rate and steps; no push; saving and
    evaluation only where the run stops early (each evaluation a checkpoint, the best one restored at the end)."""
    weighting = run.method or "equal"
    if run.weights is not None:
        options = {"weights": dict(run.weights)}
    else:
        options = training_args.weighting_options if run.method == training_args.weighting else {}
    stopping = (
        dict(
            eval_strategy="steps",
            eval_steps=eval_steps,
            save_strategy="steps",
            save_steps=eval_steps,
            save_total_limit=1,
            load_best_model_at_end=True,
            metric_for_best_model="relative_score",
            greater_is_better=True,
        )
        if run.early_stopping
        else dict(eval_strategy="no", save_strategy="no", load_best_model_at_end=False)
    )
    return replace(
        training_args,
        output_dir=str(output_dir),
        seed=run.seed,
        weighting=weighting,
        weighting_options=options,
        learning_rate=run.learning_rate or training_args.learning_rate,
        max_steps=run.max_steps,
        push_to_hub=False,
        report_to="none",
        disable_tqdm=True,
        resume_from_checkpoint=None,
        **stopping,
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
    validation_fraction: float = 0.1,
    patience: int = 3,
    eval_steps: int | None = None,
    evaluations_per_cap: int = 20,
    progress: bool = True,
) -> dict[str, Any]:
    """Runs (or resumes) the comparison and writes comparison.json / .md / .png under `output_dir`.

    A seeded `validation_fraction` of each training source is held out (the same rows for every run): early
    stopping (budget `convergence`) and the sweeps choose on it; the table reports the evaluation (test) rows,
    which no choice has seen. Without `eval_steps`, the convergence budget evaluates `evaluations_per_cap` times
    over the step cap."""
    _check_options(model_args, methods, seeds, validation_fraction, patience)
    if not validation_fraction and (budget == "convergence" or any(method in SWEEPS for method in methods)):
        choosing = "the convergence budget" if budget == "convergence" else "a sweep (equal_lr_sweep, static_sweep)"
        raise UserError(f"{choosing} needs validation rows to choose on: give --validation_fraction above 0 (e.g. 0.1)")
    output_dir = Path(output_dir)

    # The data is loaded once, with the recipe's seed: every run sees the same training, validation and test rows.
    train_sources, test_sources = load_data(data_args, seed=training_args.seed)
    train_sources, validation_sources = _split_validation(train_sources, validation_fraction, training_args.seed)
    task_specs = recipe_task_specs(train_sources)
    task_names = [spec.name for spec in task_specs]
    metric_of = {spec.name: COMPARE_METRIC[spec.type] for spec in task_specs}
    steps = planned_optimizer_steps(build_task_mixture(train_sources, training_args), training_args)
    eval_steps = eval_steps or max(1, steps // evaluations_per_cap)
    seed_list = [training_args.seed + offset for offset in range(seeds)]
    runs = plan_runs(task_names, methods, seed_list, steps, budget, training_args.learning_rate)

    def train(run: PlannedRun) -> dict[str, Any]:
        return train_and_score(
            run,
            model_args,
            train_sources,
            validation_sources,
            test_sources,
            training_args,
            output_dir=output_dir / run.folder,
            augment=data_args.augment,
            patience=patience,
            eval_steps=eval_steps,
        )

    is_main = training_args.process_index == 0
    results = _run_all(runs, train, output_dir, is_main=is_main, progress=progress)
    weak = weak_baselines(results, metric_of)
    comparison = {
        "settings": {
            "methods": list(methods),
            "seeds": seed_list,
            "budget": budget,
            "budget_rule": budget_rule(budget, steps, len(task_names), patience=patience, eval_steps=eval_steps),
            "steps": steps,
            "validation_fraction": validation_fraction,
            "sweeps": {name: SWEEPS[name] for name in methods if name in SWEEPS},
            # Which rows the table scores: the recipe's evaluation rows (an `mtl-hf init` recipe: its validation split).
            "scored_rows": ", ".join(_described(source) for source in test_sources),
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


def _split_validation(sources: Sequence[TaskSource], fraction: float, seed: int):
    """(training sources, validation sources): the held-out share of each training source."""
    kept, held = [], []
    for source in sources:
        train, validation = hold_out(source, fraction, seed)
        kept.append(train)
        if validation is not None:
            held.append(
                validation.derived(
                    validation.dataset, name=f"{source.name}_validation", row_numbers=validation.row_numbers
                )
            )
    return kept, held


def _check_options(
    model_args: ModelArguments, methods: Sequence[str], seeds: int, validation_fraction: float, patience: int
) -> None:
    unknown = [method for method in methods if method not in WEIGHTING_METHODS and method not in SWEEPS]
    if unknown or not methods:
        raise UserError(
            f"unknown balancing method(s) {unknown or methods}; use names from {', '.join(WEIGHTING_METHODS)}, "
            f"or the tuned baselines {', '.join(SWEEPS)}"
        )
    if not 0.0 <= validation_fraction < 1.0:
        raise UserError(f"--validation_fraction must be in [0, 1), got {validation_fraction}")
    if patience < 1:
        raise UserError(f"--patience must be at least 1, got {patience}")
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
        self._bars = transformers.utils.logging.is_progress_bar_enabled()
        transformers.utils.logging.set_verbosity_warning()
        transformers.utils.logging.disable_progress_bar()  # a bar per checkpoint saved (convergence budget)

    def __exit__(self, *exc):
        transformers.utils.logging.set_verbosity(self._level)
        if self._bars:
            transformers.utils.logging.enable_progress_bar()


def _progress_bar(total: int, *, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="run", disable=not enabled, file=sys.stderr)


__all__ = ["compare", "train_and_score"]
