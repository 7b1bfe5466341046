"""`mtl-hf add-task MODEL DATA --tasks ink[,...] --output NEW`: new tasks learnt on a trained model, its old tasks kept.

    mtl-hf add-task outputs/shop catalogue.csv --tasks material --output outputs/shop-material \\
        [--mode heads|lora|full] [--old_data TABLE] [--old_rows TABLE] [--max_old_task_drop 0.02] [--key value ...]

The recipe `train` runs with `add_tasks_to: MODEL` (docs/training.md, "Adding a task to a trained model"); this
command writes its flags: DATA's columns named by --tasks are the new tasks (DATA needs no column of the old ones),
--old_rows mixes in labelled rows of the old tasks, and any `--key value` after them sets a recipe field (e.g.
--num_train_epochs 20, --image_column image_path, --distill_weight 2).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

from ..errors import UserError
from ..utils.validation import comma_separated
from .parsing import CommandParser, user_errors_in_one_line

# What the recipe trains with unless a flag says otherwise: heads and adapters learn fast; in `full` mode the
# backbone moves ten times slower than the heads (a trained backbone is kept, not relearnt).
MODE_DEFAULTS = {
    "heads": {"learning_rate": 1e-3},
    "lora": {"learning_rate": 1e-3},
    "full": {"learning_rate": 1e-4, "head_learning_rate": 1e-3},
}
COMMON_DEFAULTS = {"num_train_epochs": 10, "per_device_train_batch_size": 32, "weighting": "equal", "report_to": "none"}


def parser(prog: str) -> CommandParser:
    command = CommandParser(prog=prog, description=__doc__.split("\n\n")[0])
    command.add_argument("model", help="the trained model (a folder saved by mtl_hf, or a Hub id)")
    command.add_argument("data", help="the new tasks' labelled rows (a table, folder, Parquet or Hub dataset)")
    command.add_argument("--tasks", required=True, help="the new tasks: DATA's label columns, comma-separated")
    command.add_argument("--output", required=True, help="the new model's folder (it must not exist)")
    command.add_argument(
        "--mode", choices=["heads", "lora", "full"], default="heads", help="what trains (default heads)"
    )
    command.add_argument("--old_data", help="held-out rows of the old tasks, scored before and after (default: the "
                         "table the model recorded training on)")  # fmt: skip
    command.add_argument("--old_split", default="validation", help="the split of --old_data (default validation)")
    command.add_argument("--old_rows", help="labelled rows of the old tasks, mixed into the training data")
    command.add_argument("--max_old_task_drop", type=float, help="refuse to save when an old task's score falls more")
    return command


def recipe_flags(args: argparse.Namespace, old_tasks: list[str], overrides: Sequence[str]) -> list[str]:
    """The `train` flags of this add-task: the mode's defaults first, the user's `--key value` pairs last (they win)."""
    new_tasks = comma_separated(args.tasks)
    if not new_tasks:
        raise UserError("--tasks names no task: give DATA's new label columns, e.g. --tasks material,neckline")
    clash = [name for name in new_tasks if name in old_tasks]
    if clash:
        raise UserError(
            f"--tasks {clash}: {args.model} has such task(s) already; name the new one(s) otherwise, or pass its "
            "labelled rows with --old_rows"
        )
    values = {**COMMON_DEFAULTS, **MODE_DEFAULTS[args.mode]}
    values.update(add_tasks_to=args.model, add_task_mode=args.mode, output_dir=args.output, old_split=args.old_split)
    if args.old_rows:
        sources = [{"dataset": args.data, "tasks": new_tasks}, {"dataset": args.old_rows, "tasks": old_tasks}]
        values["sources"] = json.dumps(sources)
    else:
        values.update(dataset=args.data, tasks=json.dumps(new_tasks))
    for name in ("old_data", "max_old_task_drop"):
        if getattr(args, name) is not None:
            values[name] = getattr(args, name)
    flags = [item for key, value in values.items() for item in (f"--{key}", str(value))]
    return [*flags, *overrides]


def main(argv: Sequence[str], *, prog: str = "mtl-hf add-task") -> dict[str, float]:
    with user_errors_in_one_line(prog):
        args, overrides = parser(prog).parse_known_args(list(argv))
        from ..models.mtl_vit.configuration_mtl_vit import MultiTaskViTConfig
        from .model_loading import existing_model, loading_model
        from .recipe.parser import parse_recipe
        from .train import run

        with loading_model(args.model):
            old_tasks = MultiTaskViTConfig.from_pretrained(existing_model(args.model)).task_names
        return run(*parse_recipe(recipe_flags(args, old_tasks, overrides), prog=prog))


__all__ = ["main", "recipe_flags"]
