"""`mtl-hf eval MODEL DATA`: every task of a saved model scored on labelled data, each task reading its column
with the model's own labels (so names map to the ids it was trained with). Rows the model was trained on are
refused, or scored and labelled as such; labels the model does not know are left out and counted."""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..utils.validation import structured_option
from .model_loading import add_pickled_weights_flag, existing_model, has_gpu, loading_model

SUMMARY = "score a saved model on labelled data, task by task"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a saved model folder or Hub id")
    add_data_arguments(parser)
    parser.add_argument(
        "--allow_training_rows",
        action="store_true",
        help="score rows the model was trained on (refused without it); the scores are labelled training-set",
    )
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON")
    parser.add_argument(
        "--reliability_diagram",
        metavar="PNG",
        help="draw each task's share right against its confidence (before and after calibration) into PNG",
    )
    add_pickled_weights_flag(parser)


def add_data_arguments(parser: argparse.ArgumentParser, *, split: str = "validation") -> None:
    """The labelled rows to score, as `eval` and the commands that score like it (`calibrate`) take them: DATA,
    its split and columns, and what to do with photos that do not decode and with the model's training rows."""
    parser.add_argument(
        "data",
        help="a catalogue table (.csv, .tsv, .jsonl), a prepared or dataset folder, Parquet file(s), an image "
        "folder, a Hub id, or builtin:shop / builtin:digits (their evaluation rows)",
    )
    parser.add_argument("--split", default=split, help="the split to score (default: %(default)s)")
    parser.add_argument(
        "--tasks",
        help="JSON mapping task -> label column, when the columns are named otherwise "
        "(default: each task reads the column of its name)",
    )
    parser.add_argument("--image_column", default="image", help="the column with the images (default: image)")
    parser.add_argument(
        "--id_column",
        help="a catalogue table's row id, whose hash gives each row its split (default: the one the model was "
        "trained with on this table, else the image column)",
    )
    parser.add_argument("--batch_size", type=int, default=64, help="images per batch (default: 64)")
    parser.add_argument("--max_rows", type=int, help="score the first N rows only")
    parser.add_argument(
        "--bad_image_policy",
        choices=["skip", "raise"],
        default="skip",
        help="a photo that is missing or does not decode: left out and counted by reason (skip, the default, as "
        "`mtl-hf init`'s recipes train), or the end of the run naming it (raise)",
    )
    parser.add_argument(
        "--skip_training_rows",
        action="store_true",
        help="score only the rows the model was not trained on (recognised by their id or photo, wherever the "
        "table lies), e.g. the new rows of a grown catalogue",
    )


def run(args: argparse.Namespace) -> int:
    if args.allow_training_rows and args.skip_training_rows:
        raise UserError(
            "--allow_training_rows scores the training rows, --skip_training_rows leaves them out: give one"
        )
    rows = rows_to_score(args)
    model, processor = model_to_score(args, rows)
    source, training_rows, left_out, unscored = rows.source, rows.training_rows, rows.left_out, rows.unscored
    prediction, chance = predicted(model, processor, source, args.batch_size, quiet=args.json)
    metrics = {**prediction.metrics, **calibration_errors(model.config, prediction)}
    if args.reliability_diagram:
        _draw_reliability(model.config, prediction, args)
    unknown = source.unknown_labels()
    if args.json:
        extra = {
            "rows": source.num_rows,
            "training_rows": training_rows,
            "training_rows_left_out": left_out,
            "unknown_labels": unknown,
            "chance": chance,
        }
        print(json.dumps({**metrics, **extra}, indent=2))
        return 0
    _print_scores(model.config, metrics, chance, source, unknown, training_rows, left_out, unscored)
    return 0


@dataclass
class RowsToScore:
    """What a command that scores a saved model on labelled rows reads first (`rows_to_score`)."""

    location: str  # the model's folder (a Hub id downloaded)
    config: Any
    source: Any  # the rows to score, as a TaskSource
    rows: Any  # the same rows with every column of the data
    unscored: list[str]  # the model's tasks the data has no column for
    training_rows: int  # how many of them the model trained on (scored: --allow_training_rows)
    left_out: int  # training rows left out (--skip_training_rows)


def rows_to_score(args: argparse.Namespace, *, count_training_rows: bool = False) -> RowsToScore:
    """The model's config and the rows of DATA to score (`add_data_arguments`), before any weight loads, so that a
    refusal comes at once: rows the model trained on are refused (`without_training_rows`) unless
    `count_training_rows` (they are then kept, and counted)."""
    from ..data.builtin import is_builtin
    from ..hub.lookup import require_path_or_hub_id

    if not is_builtin(args.data):
        require_path_or_hub_id(args.data, "data")  # before the model loads: a typo fails at once
    location = existing_model(args.model)  # and before torch loads: a wrong path answers at once
    from ..models.mtl_vit.configuration_mtl_vit import MultiTaskViTConfig

    with loading_model(args.model):
        config = MultiTaskViTConfig.from_pretrained(location)
    source, rows, unscored = scored_source(args, config)
    checked = argparse.Namespace(**{**vars(args), "allow_training_rows": True}) if count_training_rows else args
    source, training_rows, left_out = without_training_rows(checked, config, location, source, rows)
    return RowsToScore(location, config, source, rows, unscored, training_rows, left_out)


def model_to_score(args: argparse.Namespace, rows: RowsToScore):
    """(the saved model, its image processor), as `rows_to_score` found them."""
    from ..data.backbone_processor import model_image_processor
    from ..models.mtl_vit.modeling_mtl_vit import MultiTaskViTModel

    with loading_model(args.model):
        model = MultiTaskViTModel.from_pretrained(rows.location, allow_pickled_weights=args.allow_pickled_weights)
        return model.eval(), model_image_processor(rows.location, rows.config)


def calibration_errors(config, prediction) -> dict[str, float]:
    """Per classification / multilabel task, `eval_{task}_ece` of the scores the model answers with and, for a
    calibrated task, `eval_{task}_ece_uncalibrated` (T = 1): what calibration changed on these rows."""
    from ..metrics.calibration import expected_calibration_error
    from ..models.mtl_vit.calibration_mtl_vit import task_temperature

    errors = {}
    for spec in config.task_specs:
        if spec.type == "regression" or spec.name not in prediction.predictions:
            continue
        logits, targets = prediction.predictions[spec.name], prediction.label_ids[spec.name]
        temperature = task_temperature(config.calibration, spec.name)
        errors[f"eval_{spec.name}_ece"] = expected_calibration_error(spec, logits, targets, temperature)
        if spec.name in (config.calibration or {}):
            errors[f"eval_{spec.name}_ece_uncalibrated"] = expected_calibration_error(spec, logits, targets)
    return errors


def _draw_reliability(config, prediction, args) -> None:
    from ..metrics.reliability import plot_reliability
    from ..models.mtl_vit.calibration_mtl_vit import task_temperature

    temperatures = {task: task_temperature(config.calibration, task) for task in config.calibration or {}}
    title = f"reliability on {args.data} split {args.split}"
    if (
        plot_reliability(
            config.task_specs,
            prediction.predictions,
            prediction.label_ids,
            temperatures,
            args.reliability_diagram,
            title=title,
        )
        is None
    ):
        raise UserError("--reliability_diagram needs matplotlib: pip install 'mtl_hf[plots]'")


def predicted_metrics(model, processor, source, batch_size: int, *, quiet: bool = True):
    """(`model`'s metrics on `source`, prefixed `eval_`; the chance scores of its targets)."""
    prediction, chance = predicted(model, processor, source, batch_size, quiet=quiet)
    return prediction.metrics, chance


def predicted(model, processor, source, batch_size: int, *, quiet: bool = True):
    """(`model`'s prediction on `source`: per-task logits, targets and metrics prefixed `eval_`; the chance scores
    of its targets)."""
    from ..metrics.scoring import chance_scores
    from ..training.arguments import MultiTaskTrainingArguments
    from ..training.trainer import MultiTaskTrainer

    with tempfile.TemporaryDirectory() as scratch:
        training_args = MultiTaskTrainingArguments(
            output_dir=scratch,
            per_device_eval_batch_size=batch_size,
            report_to="none",
            use_cpu=not has_gpu(),
            disable_tqdm=quiet,
        )
        trainer = MultiTaskTrainer(model, training_args, processing_class=processor)
        prediction = trainer.predict(source, metric_key_prefix="eval")
        chance = chance_scores(trainer.task_specs, prediction.label_ids, training_args.multilabel_threshold)
    return prediction, chance


def _print_scores(config, metrics, chance, source, unknown, training_rows: int, left_out: int, unscored) -> None:
    from ..metrics.scoring import at_or_below_chance

    if training_rows:
        print(
            f"\nTRAINING-SET SCORES: the model was trained on {training_rows} of these {source.num_rows} rows "
            "(--allow_training_rows); they say how well it fits them, not how it does on photos it has not seen."
        )
    if left_out:
        print(f"\n{left_out} rows the model was trained on left out (--skip_training_rows): the rest are held out.")
    print(f"\n{'task':<16} {'metric':<16} {'score':>9} {'chance':>9}")
    for spec in config.task_specs:
        for key, value in metrics.items():
            metric = key.removeprefix(f"eval_{spec.name}_")
            if key.startswith(f"eval_{spec.name}_") and metric not in ("loss", "unknown_labels", "relative_score"):
                baseline = f"{round(chance[key], 4) + 0.0:>9.4f}" if key in chance else ""  # no -0.0000
                if key in chance and at_or_below_chance(value, chance[key]):
                    baseline += "  at or below chance"
                print(f"{spec.name:<16} {metric:<16} {value:>9.4f} {baseline}".rstrip())
    print("(chance, for each task's main metric: the most frequent class; every label 'yes'; the mean value)")
    if any(key.endswith("_ece") for key in metrics):
        print(
            "(ece: expected calibration error over 15 bins, of the scores the model answers with; "
            "ece_uncalibrated: of the raw scores, where the model is calibrated)"
        )
    scored = metrics.get("eval_rows_scored", source.num_rows)
    skipped = {key.removeprefix("eval_skipped_"): n for key, n in metrics.items() if key.startswith("eval_skipped_")}
    left_out = f" ({sum(skipped.values())} left out: " + ", ".join(f"{n} {kind}" for kind, n in skipped.items()) + ")"
    print(
        f"\n{scored} of {source.num_rows} rows scored{left_out if skipped else ''}; average of the tasks' main "
        f"scores {metrics['eval_average_score']:.4f}; relative score {metrics['eval_relative_score']:.4f} (0: "
        "chance, 1: perfect, averaged over tasks)"
    )
    for task, labels in unknown.items():
        rows = metrics.get(f"eval_{task}_unknown_labels", 0)
        print(f"task {task!r}: {rows} row(s) left out of its scores, with labels the model does not know: {labels}")
    if unscored:
        print(f"not scored: task(s) {unscored}, which have no column in the data (map them with --tasks)")


def without_training_rows(args: argparse.Namespace, config, location: str, source, rows):
    """(the rows to score, how many of them the model trained on, how many training rows were left out): rows it
    trained on are recognised by their hashed keys (wherever the table lies), else by the recorded location and
    split, and refused unless --allow_training_rows (scored, labelled) or --skip_training_rows (left out)."""
    import numpy as np

    from ..data.row_keys import overlap
    from ..models.mtl_vit.saving_mtl_vit import read_training_rows

    origin = source.context.origin
    same_place = origin is not None and config.trained_on(origin["data"], origin["split"])
    keys = read_training_rows(location) if Path(location).is_dir() else None
    columns = [entry["row_keys"] for entry in config.training_data or () if "row_keys" in entry]
    found = overlap(rows, keys, columns) if keys is not None else None
    seen = found.count if found is not None else source.num_rows if same_place else 0
    if not seen:
        return source, 0, 0
    how = f"recognised by their {found.column!r}" if found is not None else "the table and split it trained on"
    if args.skip_training_rows:
        if found is None:
            raise UserError(
                f"--skip_training_rows needs the hashed keys of {args.model}'s training rows, which it does not have "
                f"(trained before they were recorded, or on a stream); score another split than {args.split!r}"
            )
        keep = np.flatnonzero(~found.seen)
        if not len(keep):
            raise UserError(
                f"all {source.num_rows} rows of split {args.split!r} of {args.data} are rows {args.model} was "
                "trained on: none is left to score; score a held-out split (--split validation or --split test)"
            )
        numbers = np.asarray(source.row_numbers)[keep]
        return source.derived(source.dataset.select(keep), row_numbers=numbers), 0, seen
    if not getattr(args, "allow_training_rows", False):  # `calibrate` has no such option: it never fits on them
        unseen = source.num_rows - seen
        skip = f"add --skip_training_rows to score only the {unseen} it has not seen, " if unseen else ""
        raise UserError(
            f"{seen} of the {source.num_rows} rows of split {args.split!r} of {args.data} are rows {args.model} was "
            f"trained on ({how}): their scores measure fit, not new photos; score a held-out split (--split "
            f"validation or --split test), {skip}or --allow_training_rows to see them labelled as training-set scores"
        )
    return source, seen, 0


def scored_source(args: argparse.Namespace, config):
    """(the source of the rows to score, the same rows with every column of the data, the model's tasks the data
    has no column for)."""
    from ..data.builtin import is_builtin, load_builtin
    from ..data.encoding import task_options
    from ..data.locations import TableOptions, load_rows
    from ..data.selection import first_rows
    from ..data.sources import TaskSource
    from ..data.tables import is_table

    columns = structured_option("--tasks", args.tasks) or {}
    unknown = sorted(set(columns) - set(config.task_names))
    if unknown:
        raise UserError(f"--tasks names {unknown}, which the model lacks; its tasks are {config.task_names}")
    if is_builtin(args.data):
        data, table = load_builtin(args.data, seed=0)[1], TableOptions()
    else:
        data, table = args.data, _table_options(args, config)
    rows = load_rows(data, split=args.split, streaming=False, table=table).dataset
    column_names = rows.column_names
    absent = {task: column for task, column in columns.items() if column not in column_names}
    if absent:
        raise UserError(
            f"--tasks maps {absent}, but the data has no column(s) {sorted(set(absent.values()))}; "
            f"its columns are {column_names}"
        )
    column_of = {name: columns.get(name, name) for name in config.task_names}
    tasks = {
        spec.name: task_options(spec, column_of[spec.name])
        for spec in config.task_specs
        if column_of[spec.name] in column_names
    }
    if not tasks:
        raise UserError(
            f"the data has none of the model's label columns {list(column_of.values())} (its columns: "
            f'{column_names}); map them with --tasks \'{{"task": "column"}}\''
        )
    source = TaskSource(
        data,
        tasks,
        name=Path(args.data).name or args.data,
        image_column=args.image_column,
        split=args.split,
        id_column=table.key_column if table.key_column in column_names else None,
        split_fractions=table.fractions if is_table(data) else None,
        unknown_labels="count",
        bad_image_policy=args.bad_image_policy,
    )
    if args.max_rows:
        source = first_rows(source, args.max_rows)
        rows = rows.select(range(source.num_rows))
    unscored = [name for name in config.task_names if name not in tasks]
    return source, rows, unscored


def _table_options(args: argparse.Namespace, config):
    """How a catalogue table falls into splits: as the model's training recorded it for this table, else by
    --id_column (or the image column) and the default shares."""
    from ..data.locations import TableOptions
    from ..data.tables import SPLIT_COLUMN, is_table, table_columns

    resolved = str(Path(args.data).resolve())
    for entry in config.training_data or ():
        if entry.get("data") == resolved and entry.get("split_by"):
            options = TableOptions.from_rule(entry["split_by"])
            if args.id_column and args.id_column != options.key_column:
                raise UserError(
                    f"--id_column {args.id_column} differs from {options.key_column!r}, by which {args.model} was "
                    f"trained on {args.data}: its splits would mix training rows in; leave --id_column out"
                )
            return options
    if not args.id_column and is_table(args.data):
        # A copy of a table the model trained on, elsewhere or grown: split by the rule training recorded for a
        # table with the same id column, so that its held-out splits are the ones training held out.
        columns = table_columns(args.data)
        for entry in config.training_data or ():
            rule = entry.get("split_by") or {}
            if rule.get("id_column") in columns and SPLIT_COLUMN not in columns:
                return TableOptions.from_rule(rule)
    return TableOptions(key_column=args.id_column or args.image_column)


__all__ = [
    "SUMMARY",
    "add_arguments",
    "RowsToScore",
    "add_data_arguments",
    "model_to_score",
    "predicted",
    "predicted_metrics",
    "rows_to_score",
    "run",
    "scored_source",
    "without_training_rows",
]
