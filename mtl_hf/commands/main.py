"""`mtl-hf`: train from a recipe, evaluate, predict and push from the command line.

mtl-hf train CONFIG.yaml [--key value ...]
mtl-hf compare CONFIG.yaml [--methods equal,famo,...] [--seeds 3] [--budget per-task|total]
mtl-hf prepare CATALOGUE OUTPUT --image_column path --tasks category,colour,... [--size 256] [--master local[*]]
mtl-hf eval MODEL DATA [--split validation] [--json]
mtl-hf predict MODEL IMAGE [IMAGE ...] [--top_k 3] [--json]
mtl-hf push MODEL REPO_ID [--private]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
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
        from .train import main as train_main

        if len(argv) == 1:
            parser.parse_args(["train", "--help"])
        try:
            train_main(argv[1:], prog="mtl-hf train")
        except SystemExit as exit:
            if exit.code != 2:
                raise
            return 2  # a user error, already reported in one line
        return 0
    if argv and argv[0] == "compare":
        from .compare import main as compare_main

        try:
            compare_main(argv[1:])
        except (FileNotFoundError, ValueError) as error:
            print(f"mtl-hf compare: error: {error}", file=sys.stderr)
            return 2
        return 0
    if argv and argv[0] == "prepare":
        from .prepare import main as prepare_main

        if len(argv) == 1:
            parser.parse_args(["prepare", "--help"])
        try:
            prepare_main(argv[1:])
        except (ImportError, OSError, ValueError) as error:
            print(f"mtl-hf prepare: error: {_first_line(error)}", file=sys.stderr)
            return 2
        return 0
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        print(f"mtl-hf {args.command}: error: {_unknown_flags_message(commands_of(parser)[args.command], unknown)}",
              file=sys.stderr)  # fmt: skip
        return 2
    try:
        return args.run(args)
    except (OSError, ValueError, TypeError, KeyError) as error:
        # OSError covers a Hub id that is not on the Hub (or no Hub to reach): its first line says which.
        print(f"mtl-hf {args.command}: error: {_first_line(error)}", file=sys.stderr)
        return 2


def _build_parser() -> argparse.ArgumentParser:
    # allow_abbrev=False everywhere: a typo such as --top for --top_k must be an error, not another flag.
    parser = argparse.ArgumentParser(prog="mtl-hf", description="Multi-task vision transformers, the Hugging Face way.",
                                     allow_abbrev=False)  # fmt: skip
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser = functools.partial(commands.add_parser, allow_abbrev=False)

    # `train` and `compare` hand everything after their name to their own parsers (main() above);
    # these entries give `mtl-hf --help` its list and each command its usage line.
    for name, summary, description, rest in [
        ("train", "train from a recipe YAML (see recipes/configs/)",
         "Train from a recipe YAML; flags after it override its values. `mtl-hf train CONFIG.yaml --help` lists "
         "every field.", "--key value pairs that override the YAML"),
        ("compare", "multi-task vs single-task models and balancing methods, over seeds",
         "Train single-task baselines and one multi-task model per balancing method from a recipe; "
         "`mtl-hf compare CONFIG.yaml --help` lists the options.",
         "--methods, --seeds, --budget, --output_dir, and --key value recipe overrides"),
    ]:  # fmt: skip
        command = commands.add_parser(name, help=summary, description=description)
        command.add_argument("config", help="the recipe YAML, e.g. recipes/configs/demo.yaml")
        command.add_argument("arguments", nargs=argparse.REMAINDER, help=rest)

    prepare = commands.add_parser(
        "prepare", help="a catalogue of product photos -> Parquet shards for training, on Spark",
        description="Decode, check, resize and label a catalogue's photos on Spark and write Parquet shards; "
                    "`mtl-hf prepare --help` lists the options.",
    )  # fmt: skip
    prepare.add_argument("arguments", nargs=argparse.REMAINDER, help="CATALOGUE OUTPUT --image_column ... --tasks ...")

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
    for command in (evaluate, predict):
        command.add_argument("--allow_pickled_weights", action="store_true",
                             help="load a model that has only pickled weights (pytorch_model.bin; they can run "
                                  "code when loaded): only for folders you trust")  # fmt: skip
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


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def commands_of(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    actions = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
    return dict(actions[0].choices)


def _unknown_flags_message(command: argparse.ArgumentParser, unknown: Sequence[str]) -> str:
    from .train import flag_hints

    return f"unrecognized argument(s) {list(unknown)}: {flag_hints(command, unknown)}; see `{command.prog} --help`"


# -- eval ------------------------------------------------------------------------------------------


def _evaluate(args: argparse.Namespace) -> int:
    from transformers import AutoImageProcessor

    from .. import MultiTaskTrainer, MultiTaskTrainingArguments, MultiTaskViTModel
    from ..data import TaskSource
    from ..data.sources import load_split, require_path_or_hub_id, task_options
    from .train import BUILTIN_PREFIX, load_builtin

    if not args.data.startswith(BUILTIN_PREFIX):
        require_path_or_hub_id(args.data, "data")  # before the model loads: a typo fails at once
    with _hub_lookup(args.model):
        model = MultiTaskViTModel.from_pretrained(
            _existing(args.model), allow_pickled_weights=args.allow_pickled_weights
        )
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
    absent = {task: column for task, column in columns.items() if column not in rows.column_names}
    if absent:
        raise ValueError(f"--tasks maps {absent}, but the data has no column(s) {sorted(set(absent.values()))}; "
                         f"its columns are {rows.column_names}")  # fmt: skip
    unscored = [name for name in model.config.task_names if columns.get(name, name) not in rows.column_names]
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
    if unscored:
        print(f"not scored: task(s) {unscored}, which have no column in the data (map them with --tasks)")
    return 0


# -- predict ---------------------------------------------------------------------------------------


def _predict(args: argparse.Namespace) -> int:
    from transformers import pipeline

    from .. import PIPELINE_TASK
    from ..models.mtl_vit.modeling_mtl_vit import refuse_pickled_weights

    model = _existing(args.model)
    for image in args.images:
        if not image.startswith(("http://", "https://")) and not Path(image).is_file():
            raise FileNotFoundError(f"no image file at {image}")
    with _hub_lookup(model):
        if not args.allow_pickled_weights:  # here, since the pipeline would bury the reason in its own message
            refuse_pickled_weights(model)
        classify = pipeline(PIPELINE_TASK, model=model, device=0 if _has_gpu() else -1,
                            model_kwargs={"allow_pickled_weights": args.allow_pickled_weights})  # fmt: skip
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
    from huggingface_hub import CommitOperationAdd, HfApi

    from ..hub.card import card_from_folder

    folder = Path(args.model)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} is not a saved model folder (no config.json); save the model first")
    card = card_from_folder(folder, model_id=args.repo_id)
    card.text = _with_model_id(card.text, args.repo_id)

    # One commit holds the model and the card naming the repository. The local folder keeps its own
    # card until that commit has landed: a failed push leaves it exactly as it was.
    files = [path for path in sorted(folder.rglob("*")) if path.is_file() and _is_pushed(path.relative_to(folder))]
    operations = [CommitOperationAdd(path.relative_to(folder).as_posix(), str(path)) for path in files
                  if path.relative_to(folder).as_posix() != "README.md"]  # fmt: skip
    operations.append(CommitOperationAdd("README.md", str(card).encode()))
    api = HfApi(token=args.token)
    url = api.create_repo(args.repo_id, private=args.private, exist_ok=True)
    commit = api.create_commit(repo_id=args.repo_id, operations=operations, revision=args.revision,
                               commit_message=args.commit_message)  # fmt: skip
    card.save(folder / "README.md")
    print(f"pushed {folder} to {url} ({commit.oid[:10] if commit.oid else 'no change'})")
    return 0


def _is_pushed(relative: Path) -> bool:
    # Checkpoints and private scratch files (`_*`) stay local.
    return not any(part.startswith(("checkpoint-", "_")) for part in relative.parts)


def _with_model_id(text: str, repo_id: str) -> str:
    """The card's code examples pointed at the Hub repository instead of the local folder."""
    match = re.search(r'model="([^"]+)"', text)
    if match is None or match.group(1) == repo_id:
        return text
    local = match.group(1)
    return text.replace(f'"{local}"', f'"{repo_id}"').replace(f"predict {local} ", f"predict {repo_id} ")


# -- helpers ---------------------------------------------------------------------------------------


def _existing(model: str) -> str:
    from ..data.sources import require_path_or_hub_id

    if Path(model).exists() and not (Path(model) / "config.json").is_file():
        raise FileNotFoundError(f"{model} has no config.json: not a saved model folder")
    require_path_or_hub_id(model, "model folder")
    return model


@contextlib.contextmanager
def _hub_lookup(model: str):
    """A model that is neither a local folder nor found on the Hub: one line saying both were tried."""
    try:
        yield
    except OSError as error:
        if Path(model).exists():
            raise
        raise FileNotFoundError(f"no model at {model}: no local folder of that name, and the Hub lookup of "
                                f"{model} failed ({_first_line(error)})") from None  # fmt: skip


def _has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


if __name__ == "__main__":
    raise SystemExit(main())
