"""`mtl-hf predict MODEL SOURCE --output OUT`: every task's answer for every photo of a catalogue, written as
Parquet shards that a rerun resumes (`inference/tagging.py`); `mtl-hf predict MODEL IMAGE [IMAGE ...]`: the
answers for a few image files, printed as a table or JSON through the `multi-task-image-classification`
pipeline."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import MissingPathError, UserError, one_line
from ..utils.validation import comma_separated, structured_option
from .model_loading import add_pickled_weights_flag, existing_model, has_gpu, loading_model
from .precision import add_engine_arguments, gated_bf16, refuse_gate_arguments_unused

SUMMARY = "every task's answer for each image, or for a whole catalogue (--output)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a saved model folder or Hub id")
    parser.add_argument(
        "images",
        nargs="+",
        metavar="SOURCE",
        help="image files or URLs (answers printed); with --output one source: an image folder (recursive), a "
        "catalogue table (.csv, .tsv, .jsonl, .parquet), or a folder or URL (s3://...) of Parquet shards",
    )
    parser.add_argument(
        "--output", help="write the answers as Parquet shards here (a folder or an fsspec URL); a rerun resumes"
    )
    parser.add_argument("--top_k", type=int, default=3, help="labels shown per classification task (default: 3)")
    parser.add_argument(
        "--threshold",
        action="append",
        default=[],
        metavar="[TASK=]SCORE",
        help="multilabel score threshold, for every multilabel task (0.4) or one (tags=0.3); repeatable (default: 0.5)",
    )
    parser.add_argument("--batch_size", type=int, default=32, help="images per forward pass (default: 32)")
    parser.add_argument("--json", action="store_true", help="print JSON (one object per image) instead of a table")
    parser.add_argument("--image_column", default="image", help="the catalogue's column of photos (default: image)")
    parser.add_argument("--keep_columns", help="input columns copied to the output, comma-separated (default: all)")
    parser.add_argument(
        "--num_workers",
        type=int,
        help="DataLoader workers decoding photos (default: enough to feed an accelerator, none on the CPU)",
    )
    parser.add_argument(
        "--shard_rows", type=int, default=10_000, help="rows per output shard of a table or folder (default: 10000)"
    )
    parser.add_argument(
        "--storage_options",
        help="JSON fsspec options for object storage (credentials, endpoint), for the input, its photos and OUT",
    )
    parser.add_argument(
        "--master",
        help="tag the shards on Spark (local[4], spark://host:7077, yarn): one task per shard, the model loaded "
        "once per Python worker; executors need mtl_hf and the model, input and output at the same paths",
    )
    parser.add_argument(
        "--hash_photos",
        action="store_true",
        help="recognise a folder's changed photos by their bytes (hashed once a run) instead of their sizes and "
        "modification times, for copies that keep both",
    )
    add_engine_arguments(parser)
    add_review_argument(parser)
    add_pickled_weights_flag(parser)


def run(args: argparse.Namespace) -> int:
    if args.top_k < 1:
        raise UserError(f"--top_k must be at least 1, got {args.top_k}")
    if args.batch_size < 1:
        raise UserError(f"--batch_size must be at least 1, got {args.batch_size}")
    every_task, per_task = parse_thresholds(args.threshold)
    review = parse_review_precision(args.review_precision)
    if args.dtype != "bf16":
        refuse_gate_arguments_unused(args, "--dtype bf16")
    if args.output is not None:
        return _tag_catalogue(args, every_task, per_task, review)
    if per_task:
        raise UserError("per-task thresholds (TASK=SCORE) need --output; give one score for all tasks here")
    catalogue_only = {
        "master": args.master is not None,
        "engine": args.engine != "torch",
        "review_precision": bool(args.review_precision),
        "dtype": args.dtype != "auto",
    }
    for flag in (flag for flag, given in catalogue_only.items() if given):
        raise UserError(f"--{flag} works on a catalogue: give --output OUT (or `mtl-hf serve` for single photos)")
    return _print_answers(args, every_task)


def parse_thresholds(values: list[str], flag: str = "--threshold") -> tuple[float | None, dict[str, float]]:
    """`--threshold` values: (the score for every multilabel task or None, {task: score})."""
    return parse_task_values(values, flag, lambda number: 0.0 <= number <= 1.0, "a threshold is a score in [0, 1]")


def parse_task_values(values: list[str], flag: str, valid, rule: str) -> tuple[float | None, dict[str, float]]:
    """Repeated `flag` values, `X` (every task) or `TASK=X`: (X for every task or None, {task: X}), each `valid`."""
    every_task, per_task = None, {}
    for value in values:
        task, _, score = value.rpartition("=")
        try:
            number = float(score)
        except ValueError:
            raise UserError(f"{flag} {value}: give a number (0.4) or TASK=NUMBER (tags=0.3)") from None
        if not valid(number):
            raise UserError(f"{flag} {value}: {rule}")
        if task:
            per_task[task] = number
        else:
            every_task = number
    return every_task, per_task


def parse_review_precision(values: list[str]) -> tuple[float | None, dict[str, float]]:
    """`--review_precision` values: (the precision for every task or None, {task: precision})."""
    rule = "a precision is a share in (0, 1), e.g. 0.98"
    return parse_task_values(values, "--review_precision", lambda number: 0.0 < number < 1.0, rule)


def add_review_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--review_precision",
        action="append",
        default=[],
        metavar="[TASK=]PRECISION",
        help="mark the answers a person should check: per task, those below the confidence that the model's "
        "validation rows say keeps the rest right this often (0.98 for every task, or tags=0.9); repeatable",
    )


def _tag_catalogue(args: argparse.Namespace, every_task: float | None, per_task: dict[str, float], review) -> int:
    from ..data.loader import default_num_workers
    from ..inference.answers import thresholds_by_task
    from ..inference.review import review_cuts, review_table
    from ..inference.tagging import TaggingOptions, tag_catalogue
    from ..models.mtl_vit.configuration_mtl_vit import MultiTaskViTConfig

    if len(args.images) != 1:
        raise UserError(f"--output tags one source (a folder, a table or Parquet shards), got {len(args.images)}")
    if args.num_workers is not None and args.num_workers < 0:
        raise UserError(f"--num_workers must be >= 0, got {args.num_workers}")
    model = existing_model(args.model)
    with loading_model(args.model):
        config = MultiTaskViTConfig.from_pretrained(model)
    thresholds = thresholds_by_task(every_task, per_task, config.task_specs)
    cuts = review_cuts(config, *review, thresholds, args.model) if args.review_precision else {}
    if cuts:
        print(review_table(cuts))
    if args.dtype == "bf16":
        if args.engine != "torch":
            raise UserError("--dtype bf16 is the PyTorch engine's; an ONNX graph's precision is its export's")
        with loading_model(args.model):
            gated_bf16(args, model, config, thresholds)
    options = TaggingOptions(
        image_column=args.image_column,
        keep_columns=comma_separated(args.keep_columns) if args.keep_columns else None,
        top_k=args.top_k,
        thresholds=thresholds,
        review_cuts={task: cut["cut"] for task, cut in cuts.items()},
        batch_size=args.batch_size,
        num_workers=default_num_workers() if args.num_workers is None else args.num_workers,
        shard_rows=args.shard_rows,
        storage_options=structured_option("--storage_options", args.storage_options) or {},
        hash_photos=args.hash_photos,
    )
    with loading_model(args.model):
        summary = tag_catalogue(
            model,
            args.images[0],
            args.output,
            options,
            allow_pickled_weights=args.allow_pickled_weights,
            engine=args.engine,
            master=args.master,
            dtype=args.dtype,
        )
    dropped = ", ".join(f"{count} {reason}" for reason, count in summary["dropped_by_reason"].items()) or "none"
    speed = summary["images_per_second"]
    print(
        f"{summary['rows_out']} of {summary['rows_in']} rows tagged into {args.output} "
        f"({summary['shards']} shards, {summary['shards_resumed']} already done); broken photos: {dropped}"
        + (f"; {speed:.1f} images/s" if speed else "")
    )
    return 0


def _print_answers(args: argparse.Namespace, threshold: float | None) -> int:
    """The pipeline's answers; `threshold` None leaves each label its calibrated threshold (0.5 where it has none)."""
    model = existing_model(args.model)
    for image in args.images:
        if Path(image).is_dir():
            raise MissingPathError(
                f"{image} is a folder: give its image files, or tag all of it with --output OUT (Parquet answers)"
            )
        if not image.startswith(("http://", "https://")) and not Path(image).is_file():
            raise MissingPathError(f"no image file at {image}")
    from transformers import pipeline

    from ..inference.registration import PIPELINE_TASK
    from ..models.mtl_vit.saving_mtl_vit import refuse_pickled_weights

    with loading_model(model):
        if not args.allow_pickled_weights:  # here, since the pipeline would bury the reason in its own message
            refuse_pickled_weights(model)
        classify = pipeline(
            PIPELINE_TASK,
            model=model,
            device=0 if has_gpu() else -1,
            model_kwargs={"allow_pickled_weights": args.allow_pickled_weights},
        )
    try:
        results = classify(args.images, top_k=args.top_k, threshold=threshold, batch_size=args.batch_size)
    except (ValueError, FileNotFoundError) as error:  # the pipeline's own (remote code: no mtl_hf error types)
        raise UserError(one_line(error)) from None
    if args.json:  # each photo's answer object (the pipeline's, serve's), with the photo it answers
        print(
            json.dumps(
                [{"image": image, **answer} for image, answer in zip(args.images, results, strict=True)], indent=2
            )
        )
        return 0
    for image, result in zip(args.images, results, strict=True):
        print(f"\n{image}")
        for task, answer in result["answers"].items():
            print(f"  {task:<14} {_shown(answer)}")
    return 0


def _shown(answer: dict) -> str:
    """One task's answer as the table prints it."""
    if "value" in answer:
        values = answer["value"] if isinstance(answer["value"], list) else [answer["value"]]
        return ", ".join(f"{value:.4f}" for value in values)
    scores = ", ".join(f"{s['label']} ({s['score']:.3f})" for s in answer["scores"])
    if "label" in answer:
        return scores
    return f"{', '.join(answer['labels']) or '(none above threshold)'}  [scores: {scores}]"


__all__ = ["SUMMARY", "add_arguments", "add_review_argument", "parse_review_precision", "parse_thresholds", "run"]
