"""`mtl-hf init CATALOGUE --image_column COLUMN --tasks a,b,c`: a first recipe for a shop's own catalogue table.

It reads the whole table as training will: each task's type and labels (written into the recipe, so that every
split encodes a label with the same id), the training rows per label, the blank cells, the rows of each split, and
the photos that are not there or do not decode; then writes a commented recipe and says what to run next. The
backbone follows the training rows per label (`backbone_choice.py`): a pretrained one from the Hub where they are
few, a small ViT from scratch where they are many.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from ..errors import UserError
from .backbone_choice import HEAD_LEARNING_RATE, LP_SHARE, PARAMETERS, PRETRAINED, SCRATCH_ROWS_PER_LABEL

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
    parser.add_argument(
        "--backbone",
        default="auto",
        help="auto (the default: chosen by the training rows per label, see docs/training.md), scratch (a small ViT "
        "of random weights), or a Hub id or local folder of a pretrained backbone",
    )
    parser.add_argument("--output", default="recipe.yaml", help="the recipe to write (default: recipe.yaml)")
    parser.add_argument("--force", action="store_true", help="overwrite --output if it exists")


def run(args: argparse.Namespace) -> int:
    from ..data.survey import survey_catalogue
    from .backbone_choice import choose_backbone, rows_per_label
    from .model_loading import has_gpu
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
    refuse_single_label_tasks(survey)
    choice = choose_backbone(rows_per_label(survey.tasks), args.backbone, gpu=has_gpu())
    hub_note = check_backbone(choice)  # before anything is written: a name the Hub does not have is refused
    output.write_text(recipe_text(survey, args, choice))
    print(survey_report(survey))
    print(f"  backbone: {choice.name or 'a small ViT from scratch'}, because {choice.reason}")
    if hub_note:
        print(f"  {hub_note}")
    print(f"wrote {output}; next: mtl-hf train {output}")
    return 0


def refuse_single_label_tasks(survey) -> None:
    """A classification task whose training rows hold one label has nothing to learn: refused, named."""
    for task in survey.tasks:
        present = [label for label, count in task.train_label_counts.items() if count]
        if task.spec.type == "classification" and len(present) < 2:
            held = f"only {present[0]!r}" if present else "no label"
            raise UserError(
                f"task {task.spec.name!r} has {held} in its training rows: nothing to learn; leave it out of "
                "--tasks, or add rows with its other labels"
            )


def check_backbone(choice) -> str | None:
    """Raises for a pretrained backbone that is neither a local folder nor on the Hub; a one-line note where the
    Hub cannot be reached (the recipe is written: it downloads the backbone when training starts)."""
    from ..hub.lookup import probe_hub, require_path_or_hub_id

    if choice.start != "pretrained" or Path(choice.name).is_dir():
        return None
    require_path_or_hub_id(choice.name, "backbone", where="--backbone: ")
    state, detail = probe_hub(choice.name)
    if state == "missing":
        raise UserError(f"--backbone {choice.name}: no such model on the Hub ({detail}); check the name (owner/name)")
    if state != "unreachable":
        return None
    return (
        f"the Hub cannot be reached ({detail}), and training downloads {choice.name}: train where it can be, or "
        f"copy the checkpoint here and rerun with --backbone FOLDER; a from-scratch model needs about "
        f"{SCRATCH_ROWS_PER_LABEL} training rows per label (bench/results/learning_curve.md), --backbone scratch"
    )


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
        per_label = ""
        if spec.type != "regression":
            fewest, median = task.rows_per_label()
            per_label = f"; training rows per label: fewest {fewest}, median {median:g}"
        lines.append(f"  {spec.name}: {kind}, {task.blank} {blank}{per_label}")
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


def recipe_text(survey, args: argparse.Namespace, choice) -> str:
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
        *_model_lines(choice, args, epochs * steps_per_epoch),
        "",
        "# -- training ------------------------------------------------------------------------------------",
        f"output_dir: outputs/{survey.path.stem}",
        f"num_train_epochs: {epochs}   # about {STEPS_TARGET} photos seen, for {rows} training rows",
        f"per_device_train_batch_size: {BATCH_SIZE}",
        "per_device_eval_batch_size: 128",
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


def _model_lines(choice, args: argparse.Namespace, steps: int) -> list[str]:
    """The recipe's backbone and the learning rates that go with it."""
    why = f"# Chosen because {choice.reason}."
    if choice.start == "scratch":
        return [
            why,
            "# A small ViT trained from scratch, a few minutes on a CPU. With few rows per label, start from a",
            "# pretrained backbone instead: `mtl-hf init ... --backbone facebook/dinov2-small` (docs/training.md).",
            "backbone_config:",
            "  model_type: vit",
            f"  image_size: {args.image_size}",
            "  patch_size: 8",
            "  hidden_size: 128",
            "  num_hidden_layers: 4",
            "  num_attention_heads: 4",
            "  intermediate_size: 256",
            f"learning_rate: {_number(SCRATCH_LEARNING_RATE)}   # random weights take large steps",
        ]
    size = f"{PARAMETERS[choice.size]} parameters; " if choice.name in PRETRAINED.values() else ""
    lines = [
        why,
        f"backbone: {choice.name}   # {size}downloaded when training starts; its image processor sizes the photos",
        f"learning_rate: {_number(choice.learning_rate)}   # the backbone's: 1e-4 for a small ViT (ViT-S), 5e-5 for "
        "a base one (ViT-B), batch 32",
        f"head_learning_rate: {_number(HEAD_LEARNING_RATE)}   # the new heads start from random weights",
        f"layer_decay: {choice.layer_decay:g}   # block i of L at learning_rate * {choice.layer_decay:g} ** (L - i): "
        "the lower blocks move least (0.75 ViT-S, 0.65 ViT-B)",
    ]
    if choice.lp_ft:
        lines += [
            "freeze_backbone: true   # linear probing first: the heads learn on the frozen features ...",
            f"unfreeze_backbone_at_step: {max(1, round(LP_SHARE * steps))}   # ... then everything trains (LP-FT), "
            f"after {LP_SHARE:.0%} of the {steps} steps",
        ]
    return lines


def _number(value: float) -> str:
    """A float as YAML reads it back as one (YAML 1.1 takes `5e-05` for a string, `5.0e-05` for a number)."""
    text = f"{value:g}"
    return f"{value:.1e}" if "e" in text else text


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
