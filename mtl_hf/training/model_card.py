"""The model card a trainer writes at every save: how it trained (sources, mixing, balancing,
hyperparameters), its latest evaluation beside chance, and its per-task training curves."""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

from ..hub.card import CURVES_FILE, build_model_card, write_eval_results
from ..hub.curves import plot_training_curves
from ..metrics.reliability import DIAGRAM_FILE

if TYPE_CHECKING:
    from .trainer import MultiTaskTrainer

CHANCE_RESULTS_FILE = "eval_chance_results.json"
"""Chance scores the recipe writes beside the model (`save_metrics("eval_chance", ...)`); the card shows them."""
ADDED_TASKS_FILE = "added_tasks.json"
"""The earlier tasks' scores before and after tasks were added to a model (the recipe's gate); the card shows them."""


def training_summary(trainer: MultiTaskTrainer) -> dict[str, Any]:
    """How `trainer` trains, for the model card: sources, mixing, balancing and hyperparameters."""
    args = trainer.args
    sources = trainer.train_mixture.sources if trainer.train_mixture is not None else []
    hyperparameters = {
        "learning_rate": args.learning_rate,
        "train_batch_size (per device)": args.per_device_train_batch_size,
        "gradient_accumulation_steps": args.gradient_accumulation_steps,
        "devices": args.world_size,
        "optimizer": getattr(args.optim, "value", args.optim),
        "lr_scheduler": getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type),
        "weight_decay": args.weight_decay,
        "steps trained": trainer.state.global_step,
        "precision": "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32",
        "seed": args.seed,
    }
    return {
        "sources": [
            {"name": s.name, "rows": s.num_rows, "tasks": s.task_names, "description": s.description} for s in sources
        ],
        "evaluation": [{"name": s.name, "rows": s.num_rows} for s in trainer.eval_sources.values()],
        "sampling_strategy": args.sampling_strategy,
        "batch_mode": args.batch_mode,
        "when_exhausted": args.when_exhausted,
        "weighting": args.weighting,
        "weighting_options": args.weighting_options,
        "gradient_space": args.gradient_space if trainer.weighting.uses_gradients else None,
        "hyperparameters": hyperparameters,
    }


def write_model_card(
    trainer: MultiTaskTrainer,
    folder: str | os.PathLike,
    *,
    model_name: str | None = None,
    datasets: str | list[str] | None = None,
    license: str | None = None,
) -> None:
    """Draws `training_curves.png` and writes `README.md` into `folder`."""
    folder = str(folder)
    os.makedirs(folder, exist_ok=True)
    config = trainer.accelerator.unwrap_model(trainer.model).config
    curves = plot_training_curves(trainer.state.log_history, config.task_specs, os.path.join(folder, CURVES_FILE))
    evaluations = [entry for entry in trainer.state.log_history if "eval_average_score" in entry]
    if datasets is None and trainer.train_mixture is not None:
        datasets = [s.hub_id for s in trainer.train_mixture.sources if s.hub_id]
    elif isinstance(datasets, str):
        datasets = [datasets]
    args = trainer.args
    card = build_model_card(
        config,
        model_name=model_name or (args.hub_model_id or os.path.abspath(args.output_dir)).split("/")[-1],
        model_id=args.hub_model_id or folder,
        metrics=evaluations[-1] if evaluations else None,
        training=training_summary(trainer),
        datasets=datasets or None,
        curves_file=CURVES_FILE if curves is not None else None,
        multilabel_threshold=args.multilabel_threshold,
        license=license,
        chance=_read_json(os.path.join(folder, CHANCE_RESULTS_FILE)),
        added_tasks=_read_json(os.path.join(folder, ADDED_TASKS_FILE)),
        calibration_file=DIAGRAM_FILE
        if config.calibration and os.path.isfile(os.path.join(folder, DIAGRAM_FILE))
        else None,
    )
    card.save(os.path.join(folder, "README.md"))
    write_eval_results(card, folder)


def _read_json(path: str) -> dict | None:
    if not os.path.isfile(path):
        return None
    with open(path) as file:
        return json.load(file)


__all__ = ["ADDED_TASKS_FILE", "CHANCE_RESULTS_FILE", "training_summary", "write_model_card"]
