"""`mtl-hf`: train from a recipe, evaluate, predict and push from the command line.

mtl-hf train CONFIG.yaml [--key value ...]
mtl-hf eval MODEL DATA [--split validation] [--json]
mtl-hf predict MODEL IMAGE [IMAGE ...] [--top_k 3] [--json]
mtl-hf push MODEL REPO_ID [--private]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "train":
        # Everything after `train` belongs to the recipe's own parser (YAML + overrides, its own --help).
        from .recipe import parse_args, run

        if len(argv) == 1:
            parser.parse_args(["train", "--help"])
        try:
            parsed = parse_args(argv[1:])
        except (FileNotFoundError, ValueError) as error:
            print(f"mtl-hf train: error: {error}", file=sys.stderr)
            return 2
        run(*parsed)
        return 0
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (FileNotFoundError, ValueError, TypeError, KeyError) as error:
        print(f"mtl-hf {args.command}: error: {error}", file=sys.stderr)
        return 2


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mtl-hf", description="Multi-task vision transformers, the Hugging Face way.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser(
        "train", help="train from a recipe YAML (see recipes/configs/)",
        description="Train from a recipe YAML; flags after it override its values. "
                    "`mtl-hf train CONFIG.yaml --help` lists every field.",
    )  # fmt: skip
    train.add_argument("config", help="the recipe YAML, e.g. recipes/configs/demo.yaml")
    train.add_argument("overrides", nargs=argparse.REMAINDER, help="--key value pairs that override the YAML")

    evaluate = commands.add_parser("eval", help="score a saved model on labelled data, task by task")
    evaluate.add_argument("model", help="a saved model folder or Hub id")
    evaluate.add_argument("data", help="a dataset folder, Parquet file(s), image folder, Hub id, or builtin:shop / "
                                       "builtin:digits (their evaluation rows)")  # fmt: skip
    evaluate.add_argument("--split", default="validation", help="the split to score (default: validation)")
    evaluate.add_argument("--tasks", help="JSON mapping task -> label column, when the columns are named otherwise "
                                          "(default: each task reads the column of its name)")  # fmt: skip
    evaluate.add_argument("--image_column", default="image", help="the column with the images (default: image)")
    evaluate.add_argument("--batch_size", type=int, default=64, help="images per batch (default: 64)")
    evaluate.add_argument("--max_rows", type=int, help="score the first N rows only")
    evaluate.add_argument("--json", action="store_true", help="print the metrics as JSON")
    evaluate.set_defaults(run=_evaluate)

    predict = commands.add_parser("predict", help="every task's answer for each image")
    predict.add_argument("model", help="a saved model folder or Hub id")
    predict.add_argument("images", nargs="+", metavar="IMAGE", help="image files or URLs")
    predict.add_argument("--top_k", type=int, default=3, help="labels shown per classification task (default: 3)")
    predict.add_argument("--threshold", type=float, default=0.5, help="multilabel score threshold (default: 0.5)")
    predict.add_argument("--batch_size", type=int, default=8, help="images per forward pass (default: 8)")
    predict.add_argument("--json", action="store_true", help="print JSON (one object per image) instead of a table")
    predict.set_defaults(run=_predict)

    push = commands.add_parser("push", help="upload a saved model folder (with its card) to the Hub")
    push.add_argument("model", help="the saved model folder")
    push.add_argument("repo_id", help="the Hub repository, e.g. my-shop/product-tagger")
    push.add_argument("--private", action="store_true", help="create the repository as private")
    push.add_argument("--revision", help="the branch to push to (default: main)")
    push.add_argument("--commit_message", default="Upload multi-task model with mtl_hf", help="the commit message")
    push.add_argument("--token", help="a Hub token with write access (default: the logged-in token / HF_TOKEN)")
    push.set_defaults(run=_push)
    return parser


# -- eval ------------------------------------------------------------------------------------------


def _evaluate(args: argparse.Namespace) -> int:
    from transformers import AutoImageProcessor

    from . import MultiTaskTrainer, MultiTaskTrainingArguments, MultiTaskViTModel
    from .data import TaskSource
    from .data.sources import load_split, task_options
    from .recipe import BUILTIN_PREFIX, load_builtin

    model = MultiTaskViTModel.from_pretrained(_existing(args.model))
    processor = AutoImageProcessor.from_pretrained(args.model)
    columns = json.loads(args.tasks) if args.tasks else {}
    if not isinstance(columns, dict):
        raise ValueError(f"--tasks must be a JSON object task -> column, got {args.tasks!r}")
    unknown = sorted(set(columns) - set(model.config.task_names))
    if unknown:
        raise ValueError(f"--tasks names {unknown}, which the model lacks; its tasks are {model.config.task_names}")

    if args.data.startswith(BUILTIN_PREFIX):
        rows = load_builtin(args.data, {}, seed=0)[1]
    else:
        rows = load_split(args.data, split=args.split)
    # Each task reads its column with the model's own labels, so names map to the ids it was trained with.
    tasks = {
        spec.name: task_options(spec, columns.get(spec.name, spec.name))
        for spec in model.config.task_specs
        if columns.get(spec.name, spec.name) in rows.column_names
    }
    if not tasks:
        wanted = [columns.get(name, name) for name in model.config.task_names]
        raise ValueError(f"the data has none of the model's label columns {wanted} (its columns: {rows.column_names}); "
                         "map them with --tasks '{\"task\": \"column\"}'")  # fmt: skip
    if args.max_rows:
        rows = rows.select(range(min(args.max_rows, len(rows))))
    source = TaskSource(rows, tasks, name=Path(args.data).name or args.data, image_column=args.image_column)

    with tempfile.TemporaryDirectory() as scratch:
        training_args = MultiTaskTrainingArguments(
            output_dir=scratch, per_device_eval_batch_size=args.batch_size, report_to="none",
            use_cpu=not _has_gpu(), disable_tqdm=args.json,
        )  # fmt: skip
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
    return 0


# -- predict ---------------------------------------------------------------------------------------


def _predict(args: argparse.Namespace) -> int:
    from transformers import pipeline

    from . import PIPELINE_TASK

    for image in args.images:
        if not image.startswith(("http://", "https://")) and not Path(image).is_file():
            raise FileNotFoundError(f"no image file at {image}")
    classify = pipeline(PIPELINE_TASK, model=_existing(args.model), device=0 if _has_gpu() else -1)
    results = classify(args.images, top_k=args.top_k, threshold=args.threshold, batch_size=args.batch_size)
    if args.json:
        print(
            json.dumps(
                [{"image": image, "predictions": result} for image, result in zip(args.images, results, strict=True)],
                indent=2,
            )
        )
        return 0
    for image, result in zip(args.images, results, strict=True):
        print(f"\n{image}")
        for task, answers in result.items():
            if answers and "value" in answers[0]:
                shown = ", ".join(f"{a['value']:.4f}" for a in answers)
            else:
                shown = ", ".join(f"{a['label']} ({a['score']:.3f})" for a in answers) or "(none above threshold)"
            print(f"  {task:<14} {shown}")
    return 0


# -- push ------------------------------------------------------------------------------------------


def _push(args: argparse.Namespace) -> int:
    from huggingface_hub import HfApi

    from .hub import card_from_folder

    folder = Path(args.model)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} is not a saved model folder (no config.json); save the model first")
    card = card_from_folder(folder, model_id=args.repo_id)
    card.text = _with_model_id(card.text, args.repo_id)

    # The card travels in the same commit as the model; the local copy now names the repository too.
    card.save(folder / "README.md")
    api = HfApi(token=args.token)
    url = api.create_repo(args.repo_id, private=args.private, exist_ok=True)
    commit = api.upload_folder(
        repo_id=args.repo_id,
        folder_path=folder,
        revision=args.revision,
        commit_message=args.commit_message,
        ignore_patterns=["checkpoint-*", "checkpoint-*/**", "_*"],
    )
    print(f"pushed {folder} to {url} ({commit.oid[:10] if commit.oid else 'no change'})")
    return 0


def _with_model_id(text: str, repo_id: str) -> str:
    """The card's code examples pointed at the Hub repository instead of the local folder."""
    match = re.search(r'model="([^"]+)"', text)
    if match is None or match.group(1) == repo_id:
        return text
    local = match.group(1)
    return text.replace(f'"{local}"', f'"{repo_id}"').replace(f"predict {local} ", f"predict {repo_id} ")


# -- helpers ---------------------------------------------------------------------------------------


def _existing(model: str) -> str:
    path = Path(model)
    if path.exists() and not (path / "config.json").is_file():
        raise FileNotFoundError(f"{model} has no config.json: not a saved model folder")
    if not path.exists() and (model.startswith((".", "/", "~")) or model.count("/") != 1):
        raise FileNotFoundError(f"no model at {model}; give a saved model folder or a Hub id (owner/name)")
    return model


def _has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


if __name__ == "__main__":
    raise SystemExit(main())
