"""`mtl-hf audit RECIPE.yaml TABLE`: out-of-sample probabilities from K-fold fine-tuning. Each fold's rows are
scored by a model the recipe trained on the other folds alone, so no backbone has seen the label it is asked
about (a saved model trained on the table has: it learnt some of its errors, and an audit of its embeddings
misses them; docs/trusting-answers.md measures both). K trainings' cost.

The folds are written as copies of the audited rows with a `split` column (the fold `validation`, the rest
`train`) and photo paths made absolute, under OUT/folds/, beside each fold's model.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UserError


@dataclass
class FoldedRows:
    """The audited rows and, per task, each row's out-of-sample scores (probabilities; values for regression)."""

    rows: object  # datasets.Dataset of the audited rows, every column
    tasks: list  # TaskSpec of each task, in the recipe's order
    scores: dict[str, np.ndarray]
    targets: dict[str, np.ndarray]
    id_column: str | None
    image_column: str


def folded_scores(args: argparse.Namespace, output: Path) -> FoldedRows:
    """Trains the recipe `args.model` K times (`args.folds`) on the audited split of the table `args.data` less a
    fold, and scores each fold with the model that did not see it."""
    from sklearn.model_selection import KFold

    from ..data.locations import TableOptions, load_rows
    from ..data.tables import SPLIT_COLUMN, is_table
    from .recipe.parser import parse_recipe

    if not is_table(args.data):
        raise UserError(
            f"{args.data}: an audit by fine-tuning splits a catalogue table (.csv, .tsv, .jsonl) into folds; audit "
            "other data with a saved model (`mtl-hf audit MODEL DATA`)"
        )
    # The command's data options override the recipe's, for the parse here and for every fold's training.
    # A recipe written for built-in data carries dataset_options, which a table does not take.
    overrides = ["--image_column", args.image_column, "--dataset_options", "{}"]
    overrides += ["--id_column", args.id_column] if args.id_column else []
    overrides += ["--tasks", args.tasks] if args.tasks else []
    _, data_args, _ = parse_recipe([args.model, "--dataset", str(args.data), *overrides], prog="mtl-hf audit")
    image_column = data_args.image_column
    options = TableOptions(key_column=data_args.id_column or image_column, fractions=data_args.split_fractions)
    rows = load_rows(str(args.data), split=args.split, streaming=False, table=options).dataset
    if args.max_rows:
        rows = rows.select(range(min(args.max_rows, len(rows))))
    if len(rows) < args.folds:
        raise UserError(f"{len(rows)} rows in split {args.split!r} of {args.data}, fewer than --folds {args.folds}")
    frame = rows.to_pandas()
    if SPLIT_COLUMN in frame:
        frame = frame.drop(columns=[SPLIT_COLUMN])
    folder = Path(args.data).resolve().parent
    frame[image_column] = [_absolute(value, folder) for value in frame[image_column]]
    scores: dict[str, np.ndarray] = {}
    targets: dict[str, np.ndarray] = {}
    specs = None
    for fold, (_, held) in enumerate(KFold(args.folds, shuffle=True, random_state=0).split(frame)):
        table = output / "folds" / f"fold-{fold}.csv"
        table.parent.mkdir(parents=True, exist_ok=True)
        frame.assign(**{SPLIT_COLUMN: np.where(np.isin(np.arange(len(frame)), held), "validation", "train")}).to_csv(
            table, index=False
        )
        model_folder = output / "folds" / f"model-{fold}"
        _train(args.model, [*overrides, "--dataset", str(table)], model_folder, fold, args.folds)
        specs, fold_scores, fold_targets = _score_fold(model_folder, table, data_args, args.batch_size)
        for name, values in fold_scores.items():
            if name not in scores:
                scores[name] = np.full((len(frame), *values.shape[1:]), np.nan)
                targets[name] = np.zeros((len(frame), *fold_targets[name].shape[1:]), fold_targets[name].dtype)
            scores[name][held] = values
            targets[name][held] = fold_targets[name]
    return FoldedRows(rows, specs, scores, targets, data_args.id_column, image_column)


def _absolute(value, folder: Path):
    if not isinstance(value, str) or "://" in value or Path(value).is_absolute():
        return value
    return str(folder / value)


def _train(recipe: str, overrides: list[str], output: Path, fold: int, folds: int) -> None:
    from .recipe.parser import parse_recipe
    from .train import run

    if (output / "model.safetensors").is_file():
        return  # a fold trained by an earlier run of the same audit
    print(f"fold {fold + 1} of {folds}: training {recipe} on the other folds", flush=True)
    flags = [*overrides, "--output_dir", str(output), "--report_to", "none", "--save_strategy", "no"]
    flags += ["--push_to_hub", "false", "--disable_tqdm", "true"]
    run(*parse_recipe([recipe, *flags], prog="mtl-hf audit"))


def _score_fold(model_folder: Path, table: Path, data_args, batch_size: int):
    """(the model's task specs, each task's scores on the fold's rows in file order, their targets)."""
    from ..data.backbone_processor import model_image_processor
    from ..data.sources import TaskSource
    from ..data.transforms import ImageTransforms
    from ..metrics.calibration import scores_at
    from ..metrics.label_issues import embedded_rows
    from ..models.mtl_vit.modeling_mtl_vit import MultiTaskViTModel

    model = MultiTaskViTModel.from_pretrained(model_folder).eval()
    transform = ImageTransforms.from_image_processor(model_image_processor(str(model_folder), model.config)).eval()
    source = TaskSource(
        str(table), data_args.tasks, image_column=data_args.image_column, split="validation", bad_image_policy="skip"
    )
    embedded = embedded_rows(model, transform, source, batch_size)
    if embedded.skipped:
        raise UserError(
            f"{embedded.skipped} photos of the audited rows do not decode: an audit by fine-tuning needs every row's "
            "photo (fix or drop those rows; `mtl-hf init` lists them)"
        )
    specs = [model.config.get_task(name) for name in source.task_names]
    # Raw scores (T = 1): the fold model's calibration was fitted on these very rows (its evaluation rows).
    scores = {
        spec.name: embedded.logits[spec.name]
        if spec.type == "regression"
        else scores_at(spec, embedded.logits[spec.name])
        for spec in specs
    }
    return specs, scores, embedded.targets


__all__ = ["FoldedRows", "folded_scores"]
