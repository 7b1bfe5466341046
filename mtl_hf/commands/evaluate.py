"""`mtl-hf eval MODEL DATA`: every task of a saved model scored on labelled data, each task reading its column
with the model's own labels (so names map to the ids it was trained with)."""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from ..errors import UserError
from ..utils.validation import structured_option
from .model_loading import add_pickled_weights_flag, existing_model, has_gpu, loading_model

SUMMARY = "score a saved model on labelled data, task by task"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a saved model folder or Hub id")
    parser.add_argument(
        "data",
        help="a dataset folder, Parquet file(s), image folder, Hub id, or builtin:shop / "
        "builtin:digits (their evaluation rows)",
    )
    parser.add_argument("--split", default="validation", help="the split to score (default: validation)")
    parser.add_argument(
        "--tasks",
        help="JSON mapping task -> label column, when the columns are named otherwise "
        "(default: each task reads the column of its name)",
    )
    parser.add_argument("--image_column", default="image", help="the column with the images (default: image)")
    parser.add_argument("--batch_size", type=int, default=64, help="images per batch (default: 64)")
    parser.add_argument("--max_rows", type=int, help="score the first N rows only")
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON")
    add_pickled_weights_flag(parser)


def run(args: argparse.Namespace) -> int:
    from transformers import AutoImageProcessor

    from ..data.builtin import is_builtin
    from ..data.locations import require_path_or_hub_id
    from ..models.mtl_vit.modeling_mtl_vit import MultiTaskViTModel
    from ..training.arguments import MultiTaskTrainingArguments
    from ..training.trainer import MultiTaskTrainer

    if not is_builtin(args.data):
        require_path_or_hub_id(args.data, "data")  # before the model loads: a typo fails at once
    with loading_model(args.model):
        model = MultiTaskViTModel.from_pretrained(
            existing_model(args.model), allow_pickled_weights=args.allow_pickled_weights
        )
        processor = AutoImageProcessor.from_pretrained(args.model)
    source, unscored = _scored_source(args, model.config)
    with tempfile.TemporaryDirectory() as scratch:
        training_args = MultiTaskTrainingArguments(
            output_dir=scratch,
            per_device_eval_batch_size=args.batch_size,
            report_to="none",
            use_cpu=not has_gpu(),
            disable_tqdm=args.json,
        )
        trainer = MultiTaskTrainer(model, training_args, processing_class=processor)
        metrics = trainer.predict(source, metric_key_prefix="eval").metrics
    if args.json:
        print(json.dumps(metrics, indent=2))
        return 0
    print(f"\n{'task':<16} {'metric':<10} {'score':>9}")
    for spec in model.config.task_specs:
        for key, value in metrics.items():
            if key.startswith(f"eval_{spec.name}_") and not key.endswith("_loss"):
                print(f"{spec.name:<16} {key.removeprefix(f'eval_{spec.name}_'):<10} {value:>9.4f}")
    print(f"\n{source.num_rows} rows; average of the tasks' main scores {metrics['eval_average_score']:.4f}")
    if unscored:
        print(f"not scored: task(s) {unscored}, which have no column in the data (map them with --tasks)")
    return 0


def _scored_source(args: argparse.Namespace, config):
    """(the source of the rows to score, the model's tasks the data has no column for)."""
    from ..data.builtin import is_builtin, load_builtin
    from ..data.encoding import task_options
    from ..data.locations import load_split
    from ..data.sources import TaskSource

    columns = structured_option("--tasks", args.tasks) or {}
    unknown = sorted(set(columns) - set(config.task_names))
    if unknown:
        raise UserError(f"--tasks names {unknown}, which the model lacks; its tasks are {config.task_names}")
    rows = load_builtin(args.data, seed=0)[1] if is_builtin(args.data) else load_split(args.data, split=args.split)
    absent = {task: column for task, column in columns.items() if column not in rows.column_names}
    if absent:
        raise UserError(
            f"--tasks maps {absent}, but the data has no column(s) {sorted(set(absent.values()))}; "
            f"its columns are {rows.column_names}"
        )
    column_of = {name: columns.get(name, name) for name in config.task_names}
    tasks = {
        spec.name: task_options(spec, column_of[spec.name])
        for spec in config.task_specs
        if column_of[spec.name] in rows.column_names
    }
    if not tasks:
        raise UserError(
            f"the data has none of the model's label columns {list(column_of.values())} (its columns: "
            f'{rows.column_names}); map them with --tasks \'{{"task": "column"}}\''
        )
    if args.max_rows:
        rows = rows.select(range(min(args.max_rows, len(rows))))
    unscored = [name for name in config.task_names if name not in tasks]
    return TaskSource(rows, tasks, name=Path(args.data).name or args.data, image_column=args.image_column), unscored


__all__ = ["SUMMARY", "add_arguments", "run"]
