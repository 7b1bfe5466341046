"""`mtl-hf init CATALOGUE --image_column COLUMN --tasks a,b,c`: a first recipe for a shop's own catalogue table.

It reads the whole table as training will: each task's type and labels (written into the recipe, so that every
split encodes a label with the same id), the blank cells, the rows of each split, and the photos that are not
there; then writes a commented recipe that trains a small ViT from scratch, sized to the table, and says what to
run next. The recipe is a starting point: its comments say what to change for a pretrained backbone or a GPU.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from ..errors import UserError

SUMMARY = "read a catalogue table and write a first training recipe for it"
STEPS_TARGET = 20_000
"""Rows seen in training (epochs x training rows) that the recipe aims at, within MIN_EPOCHS..MAX_EPOCHS."""
MIN_EPOCHS, MAX_EPOCHS = 3, 100
BATCH_SIZE = 32
SCRATCH_LEARNING_RATE = 0.001
"""The from-scratch recipe's peak learning rate (AdamW, cosine; a small ViT of random weights)."""
SHOWN_MISSING = 3
DECODE_LIMIT = 20_000
"""Photos init decodes by default: every one up to this many (about a minute of JPEGs on one core), else a random
sample of this size."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("catalogue", help="the catalogue table: .csv, .tsv, .jsonl or .parquet, one row per photo")
    parser.add_argument("--image_column", required=True, help="the column with each photo's path or URL")
    parser.add_argument(
        "--tasks",
        required=True,
        help="the label columns, comma-separated; a type after a colon where the data cannot tell it "
        "(e.g. category,colour,tags:multilabel,price)",
    )
    parser.add_argument(
        "--id_column", help="the product id, whose hash puts each row in train / validation / test (default: photo)"
    )
    parser.add_argument("--separator", default="|", help="what joins a multilabel cell's labels (default: |)")
    parser.add_argument("--image_size", type=int, default=64, help="the side the photos are resized to (default: 64)")
    parser.add_argument(
        "--decode_limit",
        type=int,
        default=DECODE_LIMIT,
        help=f"decode every photo up to this many, else a random sample of this many (default: {DECODE_LIMIT})",
    )
    parser.add_argument("--output", default="recipe.yaml", help="the recipe to write (default: recipe.yaml)")
    parser.add_argument("--force", action="store_true", help="overwrite --output if it exists")


def run(args: argparse.Namespace) -> int:
    from ..data.survey import survey_catalogue
    from .prepare.catalogue import parse_tasks

    output = Path(args.output)
    if output.exists() and not args.force:
        raise UserError(f"--output {output} exists; choose another name or add --force to overwrite it")
    if args.image_size < 8 or args.image_size % 8:
        raise UserError(f"--image_size {args.image_size}: give a multiple of 8 (the patch side), e.g. 64")
    if args.decode_limit < 1:
        raise UserError(f"--decode_limit must be at least 1, got {args.decode_limit}")
    survey = survey_catalogue(
        args.catalogue,
        dict(parse_tasks(args.tasks)),
        image_column=args.image_column,
        id_column=args.id_column,
        separator=args.separator,
        decode_limit=args.decode_limit,
    )
    output.write_text(recipe_text(survey, args))
    print(survey_report(survey))
    print(f"wrote {output}; next: mtl-hf train {output}")
    return 0


def training_rows(survey) -> int:
    """The train split's rows with a photo that exists."""
    return max(survey.split_rows.get("train", 0) - len(survey.missing_photos), 1)


def epochs_for(rows: int) -> int:
    return min(MAX_EPOCHS, max(MIN_EPOCHS, round(STEPS_TARGET / rows)))


def survey_report(survey) -> str:
    splits = ", ".join(f"{name} {count}" for name, count in survey.split_rows.items())
    lines = [f"{survey.path}: {survey.rows} rows; splits {survey.split_rule}: {splits}"]
    for task in survey.tasks:
        spec = task.spec
        kind = spec.type if spec.type == "regression" else f"{spec.type}, {len(spec.labels)} labels"
        blank = "empty (none of the labels)" if spec.type == "multilabel" else "blank"
        lines.append(f"  {spec.name}: {kind}, {task.blank} {blank}")
    for task in survey.tasks:
        lines.extend(f"  note: {note}" for note in task.notes)
    if survey.missing_photos:
        shown = ", ".join(survey.missing_photos[:SHOWN_MISSING])
        lines.append(
            f"  {len(survey.missing_photos)} photo(s) not found, e.g. {shown}: those rows are skipped in training "
            "(bad_image_policy: skip); fix the paths if there are many"
        )
    checked = (
        f"a random sample of {survey.photos_checked} of the {survey.photos_present} photos that exist "
        f"({survey.photos_checked / survey.photos_present:.0%}, seeded)"
        if survey.sampled
        else f"all {survey.photos_checked} photos that exist"
    )
    broken = len(survey.unreadable_photos)
    if broken:
        shown = ", ".join(survey.unreadable_photos[:SHOWN_MISSING])
        share = f" ({broken / survey.photos_checked:.1%})" if survey.sampled else ""
        lines.append(f"  decoded {checked}: {broken}{share} do not decode, e.g. {shown}: skipped in training too")
    elif survey.photos_checked:
        lines.append(f"  decoded {checked}: every one decodes")
    share, bound = survey.bad_photo_share(), survey.bad_photo_share(upper=True)
    limit = bad_photo_limit(bound)
    estimate = f", at most {bound:.1%} (95% bound)" if survey.sampled else ""
    lines.append(
        f"  missing or broken: {share:.1%} of the rows{estimate}; max_bad_image_fraction {limit:g} (twice that, "
        "rounded up to a percent, at least 1%)"
    )
    return "\n".join(lines)


def bad_photo_limit(share: float) -> float:
    """The recipe's max_bad_image_fraction: twice the share found, rounded up to a percent, at least 1% (a run
    stops when it meets far more broken photos than the survey found)."""
    return max(0.01, math.ceil(200 * share) / 100)


def recipe_text(survey, args: argparse.Namespace) -> str:
    rows = training_rows(survey)
    epochs = epochs_for(rows)
    steps_per_epoch = math.ceil(rows / BATCH_SIZE)
    check_every = max(steps_per_epoch, (epochs * steps_per_epoch) // 10)
    lines = [
        f"# A first recipe for {survey.path.name}, written by `mtl-hf init`. Train with",
        f"#   mtl-hf train {args.output}",
        "# then score the test split, which training never sees:",
        f"#   mtl-hf eval outputs/{survey.path.stem} {args.catalogue} --split test --image_column {args.image_column}"
        + (f" --id_column {args.id_column}" if args.id_column else ""),
        "",
        "# -- data ----------------------------------------------------------------------------------------",
        f"dataset: {json.dumps(str(args.catalogue))}   # paths in it are read from its folder",
        f"image_column: {args.image_column}",
    ]
    if args.id_column:
        lines.append(f"id_column: {args.id_column}   # rows are split by a hash of it: a product keeps its split")
    lines.append(
        f"# rows are split {survey.split_rule}: " + ", ".join(f"{k} {v}" for k, v in survey.split_rows.items())
    )
    lines.append("# training evaluates on the validation split; keep test for `mtl-hf eval --split test`")
    if args.separator != "|":
        lines.append(f"separator: {json.dumps(args.separator)}")
    lines.append("tasks:")
    for task in survey.tasks:
        lines.extend(_task_lines(task))
    share = survey.bad_photo_share()
    found = (
        f"init found {share:.1%} ({'a sample' if survey.sampled else 'every photo'} decoded); twice "
        f"{'its 95% bound, ' if survey.sampled else 'that, '}rounded up"
    )
    lines += [
        "bad_image_policy: skip   # a missing or broken photo drops its row, counted in the log; `raise` stops instead",
        f"max_bad_image_fraction: {bad_photo_limit(survey.bad_photo_share(upper=True)):g}   # the run stops past "
        f"this share of broken photos; {found}",
        "",
        "# -- model ---------------------------------------------------------------------------------------",
        "# A small ViT trained from scratch, a few minutes on a CPU. To start from a pretrained backbone instead,",
        "# replace backbone_config with e.g. `backbone: google/vit-base-patch16-224-in21k` (a download), and lower",
        "# learning_rate (e.g. 5.0e-5) and num_train_epochs (e.g. 5): its processor then sizes the photos.",
        "backbone_config:",
        "  model_type: vit",
        f"  image_size: {args.image_size}",
        "  patch_size: 8",
        "  hidden_size: 128",
        "  num_hidden_layers: 4",
        "  num_attention_heads: 4",
        "  intermediate_size: 256",
        "",
        "# -- training ------------------------------------------------------------------------------------",
        f"output_dir: outputs/{survey.path.stem}",
        f"num_train_epochs: {epochs}   # about {STEPS_TARGET} photos seen, for {rows} training rows",
        f"per_device_train_batch_size: {BATCH_SIZE}",
        "per_device_eval_batch_size: 128",
        f"learning_rate: {SCRATCH_LEARNING_RATE:g}",
        "lr_scheduler_type: cosine",
        "warmup_steps: 0.05",
        "weight_decay: 0.05",
        "weighting: equal   # every task's loss counts alike; try uncertainty, famo or upgrad (README)",
        "eval_strategy: steps",
        f"eval_steps: {check_every}",
        "save_strategy: steps",
        f"save_steps: {check_every}",
        "save_total_limit: 1",
        "logging_steps: 10",
        "report_to: none   # or tensorboard, trackio, wandb",
        "seed: 0",
    ]
    return "\n".join(lines) + "\n"


def _task_lines(task) -> list[str]:
    spec = task.spec
    lines = [f"  {spec.name}:", f"    column: {json.dumps(task.column)}", f"    type: {spec.type}"]
    if spec.type == "regression":
        lines[-1] += "   # learnt on standardised values, answered in the column's units"
        return lines
    counts = ", ".join(f"{label} {task.label_counts[label]}" for label in spec.labels)
    if spec.type == "multilabel":
        blank = f"{task.blank} empty, read as none of the labels (`empty: missing` to leave them out)"
    else:
        blank = f"{task.blank} blank, left out of this task's loss and scores"
    lines.append(f"    # rows per label: {counts}; {blank}")
    lines.append(f"    labels: {json.dumps(spec.labels)}")
    return lines


__all__ = [
    "SUMMARY",
    "add_arguments",
    "bad_photo_limit",
    "epochs_for",
    "recipe_text",
    "run",
    "survey_report",
]
