"""The training recipe behind `recipes/train.py` and `mtl-hf train`: one YAML file in, a trained model out.

    accelerate launch recipes/train.py recipes/configs/demo.yaml [--key value ...]

The YAML holds the fields of `ModelArguments`, `DataArguments` and `MultiTaskTrainingArguments`
side by side; flags after it override the YAML's values. `main()` reads top to bottom:
data -> tasks (from the data) -> model -> trainer -> train -> evaluate every task -> save
(model, image processor, metrics, curves) -> model card -> push if asked.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import fcntl
import json
import logging
import math
import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
import transformers
import yaml
from transformers import AutoConfig, AutoImageProcessor, HfArgumentParser, set_seed
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from ..data import ImageTransforms, TaskSource, load_digits_dataset, load_shop_dataset
from ..data.sources import check_bad_image_policy, is_url, require_path_or_hub_id
from ..metrics import PRIMARY_METRIC
from ..models.mtl_vit.configuration_mtl_vit import MultiTaskViTConfig, TaskSpec
from ..models.mtl_vit.modeling_mtl_vit import MultiTaskViTModel
from ..training.arguments import MultiTaskTrainingArguments
from ..training.trainer import MultiTaskTrainer
from ..utils.distributed import is_distributed

logger = logging.getLogger(__name__)

BUILTIN_PREFIX = "builtin:"
BUILTIN_DATASETS = ("shop", "digits")


@dataclass
class ModelArguments:
    """Where the model starts: a saved multi-task model, a pretrained backbone, or a backbone config."""

    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "A multi-task model saved by mtl_hf (folder or Hub id) to train further; "
                          "its tasks must match the data's."},
    )  # fmt: skip
    backbone: str | None = field(
        default=None,
        metadata={"help": "A pretrained vision backbone (Hub id or folder, e.g. google/vit-base-patch16-224-in21k) "
                          "whose weights start the shared encoder; the task heads start fresh."},
    )  # fmt: skip
    backbone_config: dict[str, Any] | str | None = field(
        default=None,
        metadata={"help": "A backbone trained from scratch: its config as a mapping (or JSON), with model_type "
                          "(default vit) and sizes, e.g. {image_size: 32, patch_size: 4, hidden_size: 64}."},
    )  # fmt: skip
    cache_dir: str | None = field(default=None, metadata={"help": "Where downloaded models are cached."})
    allow_pickled_weights: bool = field(
        default=False,
        metadata={"help": "Load a model or backbone that has only pickled weights (pytorch_model.bin), which can "
                          "run code when loaded: only for folders you trust. Without it they are refused."},
    )  # fmt: skip

    def __post_init__(self):
        self.backbone_config = _json_value("backbone_config", self.backbone_config, dict)
        given = [name for name in ("model_name_or_path", "backbone", "backbone_config") if getattr(self, name)]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of model_name_or_path (continue a saved model), backbone (pretrained weights) "
                f"or backbone_config (from scratch); got {given or 'none'}"
            )


@dataclass
class DataArguments:
    """The training and evaluation data: one dataset (the fields below) or several (`sources`)."""

    dataset: str | None = field(
        default=None,
        metadata={"help": "builtin:shop, builtin:digits, a local folder / Parquet file, or a Hub dataset id."},
    )
    tasks: dict[str, Any] | str | None = field(
        default=None,
        metadata={"help": "The tasks: a list of label columns, or a mapping task -> column (or -> {column, type, "
                          "labels, loss_weight, ...}). Types and label names come from the data where they can."},
    )  # fmt: skip
    dataset_options: dict[str, Any] | str | None = field(
        default=None,
        metadata={"help": "Options of a built-in dataset, e.g. {num_rows: 4000, eval_rows: 1000} for shop."},
    )
    sources: list[dict[str, Any]] | str | None = field(
        default=None,
        metadata={"help": "Several datasets: a list of mappings with the keys dataset, tasks and optionally name, "
                          "dataset_options, train_split, eval_split, eval_fraction, image_column, streaming, "
                          "storage_options, num_rows. Replaces dataset/tasks."},
    )  # fmt: skip
    image_column: str = field(default="image", metadata={"help": "The column that holds the images."})
    train_split: str = field(default="train", metadata={"help": "The split to train on."})
    eval_split: str | None = field(
        default=None,
        metadata={"help": "The split to evaluate on. Without one, eval_fraction of the training split is held out."},
    )
    eval_fraction: float = field(
        default=0.1, metadata={"help": "Share of the training rows held out for evaluation when there is no eval_split "
                                       "(map-style data only; 0 evaluates nothing)."}
    )  # fmt: skip
    streaming: bool = field(
        default=False, metadata={"help": "Stream the rows (data larger than memory); needs eval_split for evaluation."}
    )
    num_rows: int | None = field(
        default=None, metadata={"help": "Row count of a streaming dataset whose metadata lacks it."}
    )
    storage_options: dict[str, Any] | str | None = field(
        default=None,
        metadata={"help": "fsspec options for a dataset in object storage (s3://..., gs://...): credentials, "
                          "endpoint, e.g. {key: ..., secret: ..., client_kwargs: {endpoint_url: ...}}."},
    )  # fmt: skip
    max_train_rows: int | None = field(default=None, metadata={"help": "Train on the first N rows only."})
    max_eval_rows: int | None = field(default=None, metadata={"help": "Evaluate on the first N rows only."})
    bad_image_policy: str = field(
        default="raise",
        metadata={"help": "An image that cannot be decoded: 'raise' (stop, naming the source, row and file) or "
                          "'skip' (leave the row out, count it per source; see max_bad_image_fraction)."},
    )  # fmt: skip
    augment: bool = field(
        default=False,
        metadata={"help": "Random resized crops and horizontal flips in training (off when position or "
                          "side carries meaning, as for shop's corner badges)."},
    )  # fmt: skip

    def __post_init__(self):
        self.tasks = _json_value("tasks", self.tasks, (dict, list))
        self.dataset_options = _json_value("dataset_options", self.dataset_options, dict) or {}
        self.storage_options = _json_value("storage_options", self.storage_options, dict) or {}
        self.sources = _json_value("sources", self.sources, list)
        if self.sources is None and (self.dataset is None or self.tasks is None):
            raise ValueError("name the data: dataset and tasks, or a list of sources (each with dataset and tasks)")
        if self.sources is not None and (self.dataset is not None or self.tasks is not None):
            raise ValueError("give either sources or dataset/tasks, not both")
        if not 0.0 <= self.eval_fraction < 1.0:
            raise ValueError(f"eval_fraction must be in [0, 1), got {self.eval_fraction}")
        check_bad_image_policy(self.bad_image_policy)

    def source_settings(self) -> list[dict[str, Any]]:
        """One settings dict per source, the single-dataset fields filling what a source leaves out."""
        defaults = {
            "dataset_options": self.dataset_options, "image_column": self.image_column,
            "train_split": self.train_split, "eval_split": self.eval_split, "eval_fraction": self.eval_fraction,
            "streaming": self.streaming, "num_rows": self.num_rows, "name": None,
            "bad_image_policy": self.bad_image_policy, "storage_options": self.storage_options,
        }  # fmt: skip
        entries = self.sources if self.sources is not None else [{"dataset": self.dataset, "tasks": self.tasks}]
        settings = []
        for index, entry in enumerate(entries):
            if not isinstance(entry, dict):
                raise ValueError(f"sources[{index}] must be a mapping with dataset and tasks, got {entry!r}")
            unknown = sorted(set(entry) - set(defaults) - {"dataset", "tasks"})
            if unknown:
                raise ValueError(f"sources[{index}]: unknown keys {unknown}; known keys: {sorted(defaults)}")
            missing = [key for key in ("dataset", "tasks") if entry.get(key) is None]
            if missing:
                raise ValueError(f"sources[{index}] lacks {' and '.join(missing)}")
            settings.append({**defaults, **entry})
        return settings


# -- the recipe ------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None, *, prog: str = "recipes/train.py") -> dict[str, float]:
    """`recipes/train.py CONFIG.yaml [--key value ...]`: parse, then run the stages.

    A user's mistake (an unknown key, a bad value, a missing path, an output_dir in use) ends the
    program with one line naming it and exit code 2; other errors keep their traceback.
    """
    try:
        return run(*parse_args(argv))
    except (FileNotFoundError, ConnectionError, ValueError) as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


def run(model_args: ModelArguments, data_args: DataArguments, training_args: MultiTaskTrainingArguments):
    """The recipe's stages, top to bottom; returns the evaluation metrics."""
    _set_up_logging(training_args)
    with _output_dir_lock(training_args):  # first: two runs must not write into one folder
        return _run_stages(model_args, data_args, training_args)


def _run_stages(model_args: ModelArguments, data_args: DataArguments, training_args: MultiTaskTrainingArguments):
    resume_point = _resume_point(training_args)
    if resume_point is None:
        _claim_output_dir(training_args)  # before any work: a previous run there is not replaced by accident

    # 1. Data: training and evaluation sources; the tasks and their label names come from them.
    train_sources, eval_sources = load_data(data_args, seed=training_args.seed)
    task_specs = merged_task_specs(train_sources)
    # The thread count changes the order of float sums, so runs with different counts differ in
    # the last digits (`accelerate launch` without a config sets OMP_NUM_THREADS=1).
    logger.info(
        "training on %s; evaluating on %s; %d CPU threads per process (OMP_NUM_THREADS=%s)",
        train_sources, eval_sources or "nothing", torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS", "unset"),
    )  # fmt: skip

    # 2. Model and image processor (seeded first: fresh heads start the same on every rank and run).
    set_seed(training_args.seed)
    model, image_processor = build_model(model_args, task_specs)
    transforms = ImageTransforms.from_image_processor(image_processor, train=data_args.augment)

    # 3. Trainer.
    trainer = MultiTaskTrainer(
        model,
        training_args,
        train_dataset=train_sources,
        eval_dataset=eval_sources or None,
        processing_class=image_processor,
        image_transforms=transforms,
    )

    # 4. Train, resuming from the last checkpoint when asked; a finished run is left as it is.
    resume = trainer.resolve_checkpoint(resume_point)
    if resume is not None:
        reached, planned = trainer.completed_steps(resume)
        if reached >= planned:
            if trainer.is_world_process_zero():
                print(f"the run in {training_args.output_dir} is complete ({resume} reached step {reached} of "
                      f"{planned}); nothing to do. Raise num_train_epochs or max_steps to train further.")  # fmt: skip
            return {}
    train_result = trainer.train(resume_from_checkpoint=resume)
    trainer.save_metrics("train", train_result.metrics)

    # 5. Save the model, image processor, curves and card before evaluating: a failing evaluation
    #    (a corrupt image in the evaluation data) never loses the training.
    trainer.save_state()
    trainer.save_model()

    # 6. Evaluate every task, beside answers that ignore the image; the card then shows the scores.
    metrics: dict[str, float] = {}
    if eval_sources:
        prediction = trainer.predict(eval_sources, metric_key_prefix="eval")
        metrics = prediction.metrics
        trainer.log(metrics)  # into the logs (curves, card, TensorBoard) like any evaluation
        trainer.save_metrics("eval", metrics)
        baselines = chance_scores(trainer, prediction.label_ids)
        trainer.save_metrics("eval_chance", baselines, combined=False)
        trainer.save_state()
        trainer.create_model_card()
        if trainer.is_world_process_zero():
            print(results_table(task_specs, metrics, baselines))

    # 7. Push when asked.
    if training_args.push_to_hub:
        trainer.push_to_hub(commit_message="mtl_hf: end of training")  # saves the folder, then uploads it
    if trainer.is_world_process_zero():
        print(f"model, image processor, all_results.json, training_curves.png and README.md saved to "
              f"{training_args.output_dir}/")  # fmt: skip
    return metrics


# -- stages ----------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None):
    """(ModelArguments, DataArguments, MultiTaskTrainingArguments) from `CONFIG.yaml [--key value ...]`.

    The YAML gives the values; flags after it override them (`--learning_rate 1e-3`). Without a
    YAML file, everything comes from the flags.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = recipe_parser()
    if not argv or argv[0].startswith("-"):
        if any(flag in argv for flag in ("-h", "--help")):
            parser.print_help()
            raise SystemExit(0)
        return parser.parse_args_into_dataclasses(args=argv)

    config_path = Path(argv[0])
    if not config_path.is_file():
        raise FileNotFoundError(f"config file {config_path} not found; give the path to a recipe YAML file")
    with open(config_path) as file:
        values = _load_yaml(file, config_path)
    if not isinstance(values, dict):
        raise ValueError(f"{config_path}: expected a mapping of argument names to values, got {type(values).__name__}")
    values.update(_given_flags(parser, argv[1:]))
    return parse_values(values, where=str(config_path), parser=parser)


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key set twice in one mapping (PyYAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in first_line:
                raise ValueError(f"{key!r} is set twice (lines {first_line[key]} and {line}); keep one")
            first_line[key] = line
        return super().construct_mapping(node, deep=deep)


def _load_yaml(file, path: Path) -> Any:
    try:
        return yaml.load(file, Loader=_UniqueKeyLoader) or {}
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None


def recipe_parser() -> HfArgumentParser:
    # allow_abbrev=False: argparse would otherwise take `--learning_rat` for `--learning_rate`, so
    # that a typo silently sets another field.
    return HfArgumentParser((ModelArguments, DataArguments, MultiTaskTrainingArguments), allow_abbrev=False)


def parse_values(values: dict[str, Any], *, where: str = "recipe", parser: HfArgumentParser | None = None):
    """(ModelArguments, DataArguments, MultiTaskTrainingArguments) from a mapping of recipe fields."""
    parser = parser or recipe_parser()
    known = {action.dest for action in parser._actions}
    unknown = sorted(set(values) - known)
    if unknown:
        hints = [f"{key} (did you mean {close[0]}?)" for key in unknown
                 if (close := difflib.get_close_matches(key, sorted(known), n=1))]  # fmt: skip
        hint = f" - {', '.join(hints)}" if hints else ""
        raise ValueError(f"{where}: unknown argument(s) {unknown}{hint}; see `mtl-hf train --help` for the names")
    return parser.parse_dict(values)


def load_data(data_args: DataArguments, *, seed: int) -> tuple[list[TaskSource], list[TaskSource]]:
    """The training sources and the evaluation sources (with the training sources' label names)."""
    train_sources, eval_sources = [], []
    for settings in data_args.source_settings():
        train, evaluation = _load_source(settings, seed=seed)
        if data_args.max_train_rows:
            train = _first_rows(train, data_args.max_train_rows)
        if evaluation is not None and data_args.max_eval_rows:
            evaluation = _first_rows(evaluation, data_args.max_eval_rows)
        train_sources.append(train)
        if evaluation is not None:
            eval_sources.append(evaluation)
    return train_sources, eval_sources


def merged_task_specs(sources: Sequence[TaskSource]) -> list[TaskSpec]:
    """Every source's tasks, once each; a task in several sources must agree on its type and labels."""
    specs: dict[str, TaskSpec] = {}
    for source in sources:
        for spec in source.task_specs:
            seen = specs.setdefault(spec.name, spec)
            if (seen.type, seen.labels, seen.num_outputs) != (spec.type, spec.labels, spec.num_outputs):
                raise ValueError(
                    f"task {spec.name!r} differs between sources: {seen.type} with labels {seen.labels} vs "
                    f"{spec.type} with labels {spec.labels} in source {source.name!r}; give the task's labels "
                    "explicitly"
                )
    return list(specs.values())


def build_model(model_args: ModelArguments, task_specs: list[TaskSpec]):
    """The model (continued, from a pretrained backbone, or from scratch) and its image processor."""
    for field_name in ("model_name_or_path", "backbone"):
        if getattr(model_args, field_name):
            require_path_or_hub_id(getattr(model_args, field_name), "model folder", where=f"{field_name}: ")
    if model_args.model_name_or_path:
        model = MultiTaskViTModel.from_pretrained(model_args.model_name_or_path, cache_dir=model_args.cache_dir,
                                                  allow_pickled_weights=model_args.allow_pickled_weights)  # fmt: skip
        data_tasks = {spec.name: (spec.type, spec.labels) for spec in task_specs}
        model_tasks = {spec.name: (spec.type, spec.labels) for spec in model.config.task_specs}
        if data_tasks != model_tasks:
            raise ValueError(
                f"the data's tasks {data_tasks} differ from those of {model_args.model_name_or_path} {model_tasks}; "
                "use backbone: to start new heads from its weights, or add/remove tasks first"
            )
        processor = AutoImageProcessor.from_pretrained(model_args.model_name_or_path, cache_dir=model_args.cache_dir)
        return model, processor
    if model_args.backbone:
        model = MultiTaskViTModel.from_backbone(model_args.backbone, task_specs, cache_dir=model_args.cache_dir,
                                                allow_pickled_weights=model_args.allow_pickled_weights)  # fmt: skip
        processor = AutoImageProcessor.from_pretrained(model_args.backbone, cache_dir=model_args.cache_dir)
        return model, processor
    options = dict(model_args.backbone_config)
    backbone = AutoConfig.for_model(options.pop("model_type", "vit"), **options)
    model = MultiTaskViTModel(MultiTaskViTConfig(backbone_config=backbone, tasks=task_specs))
    size = backbone.image_size if isinstance(backbone.image_size, (list, tuple)) else (backbone.image_size,) * 2
    return model, ImageTransforms(size=tuple(size)).image_processor()


def chance_scores(trainer: MultiTaskTrainer, targets: dict[str, np.ndarray]) -> dict[str, float]:
    """Each task's main score for a constant answer that ignores the image.

    Classification: the evaluation data's most frequent class; multilabel: every label "yes";
    regression: the evaluation targets' mean (R^2 = 0). The first two are read off the evaluation
    labels themselves, so they are, if anything, generous to the baseline.
    """
    scores = {}
    for name, target in targets.items():
        spec = trainer.task_specs[name]
        if spec.type == "classification":
            present = target[target >= 0].astype(int)
            majority = np.bincount(present, minlength=spec.num_outputs).argmax() if present.size else 0
            logits = np.zeros((len(target), spec.num_outputs))
            logits[:, majority] = 1.0
        elif spec.type == "multilabel":
            logits = np.full(target.shape, 10.0)
        else:
            logits = np.broadcast_to(np.nanmean(target, axis=0), target.shape).copy()
        metric = PRIMARY_METRIC[spec.type]
        scores[f"eval_{name}_{metric}"] = trainer.task_metrics(spec, logits, target)[metric]
    return scores


def results_table(task_specs: Sequence[TaskSpec], metrics: dict[str, float], chance: dict[str, float]) -> str:
    rows = [f"\n{'task':<14} {'type':<15} {'metric':<9} {'score':>7} {'chance':>7}"]
    for spec in task_specs:
        key = f"eval_{spec.name}_{PRIMARY_METRIC[spec.type]}"
        if key in metrics:
            rows.append(f"{spec.name:<14} {spec.type:<15} {PRIMARY_METRIC[spec.type]:<9} "
                        f"{metrics[key]:>7.3f} {chance[key]:>7.3f}")  # fmt: skip
    rows.append("(chance: the most frequent class; every label 'yes'; the mean value)")
    return "\n".join(rows)


# -- helpers ---------------------------------------------------------------------------------------


def _load_source(settings: dict[str, Any], *, seed: int) -> tuple[TaskSource, TaskSource | None]:
    dataset, tasks = settings["dataset"], settings["tasks"]
    common = {"image_column": settings["image_column"], "bad_image_policy": settings["bad_image_policy"]}
    name = settings["name"]

    if settings["storage_options"] and not is_url(dataset):
        raise ValueError(f"storage_options apply to datasets in object storage (s3://, gs://, ...), not to {dataset!r}")
    if isinstance(dataset, str) and dataset.startswith(BUILTIN_PREFIX):
        train_rows, eval_rows = load_builtin(dataset, settings["dataset_options"], seed=seed)
        if settings["streaming"]:
            count = len(train_rows)
            train_rows = train_rows.to_iterable_dataset(num_shards=min(8, count))
        common["description"] = builtin_description(dataset, settings["dataset_options"])
        train = TaskSource(train_rows, tasks, name=name or dataset.removeprefix(BUILTIN_PREFIX),
                           num_rows=count if settings["streaming"] else None, **common)  # fmt: skip
        if eval_rows is None:
            return _hold_out(train, settings, seed)
        return train, TaskSource(eval_rows, train.fixed_tasks(), name=f"{train.name}_eval", **common)

    if settings["dataset_options"]:
        raise ValueError(f"dataset_options apply to built-in datasets ({_builtin_names()}), not to {dataset!r}")
    common["storage_options"] = settings["storage_options"]
    train = TaskSource(dataset, tasks, name=name, split=settings["train_split"], streaming=settings["streaming"],
                       num_rows=settings["num_rows"], **common)  # fmt: skip
    if settings["eval_split"]:
        evaluation = TaskSource(dataset, train.fixed_tasks(), name=f"{train.name}_{settings['eval_split']}",
                                split=settings["eval_split"], streaming=settings["streaming"], **common)  # fmt: skip
        return train, evaluation
    return _hold_out(train, settings, seed)


def load_builtin(dataset: str, options: dict[str, Any], *, seed: int):
    """The training and evaluation rows of a built-in dataset (`builtin:shop`, `builtin:digits`)."""
    kind = dataset.removeprefix(BUILTIN_PREFIX)
    options = dict(options or {})
    if kind == "shop":
        eval_rows = options.pop("eval_rows", 1000)
        num_rows = options.pop("num_rows", 4000)
        train = load_shop_dataset(num_rows, **options)
        # Evaluation rows come from further along the same endless sequence: new images, same distribution.
        evaluation = load_shop_dataset(eval_rows, start=num_rows, **options) if eval_rows else None
        return train, evaluation
    if kind == "digits":
        if options:
            raise ValueError(f"builtin:digits takes no dataset_options, got {sorted(options)}")
        splits = load_digits_dataset().train_test_split(test_size=0.2, seed=seed, stratify_by_column="digit")
        return splits["train"], splits["test"]
    raise ValueError(f"unknown built-in dataset {dataset!r}; built-in datasets are {_builtin_names()}")


def builtin_description(dataset: str, options: dict[str, Any]) -> str:
    """What a built-in dataset's rows are, for the model card."""
    if dataset.removeprefix(BUILTIN_PREFIX) == "shop":
        size = (options or {}).get("image_size", 32)
        return (f"synthetic product photos drawn by mtl_hf at {size} px (shapes, colours, patterns, corner badges), "
                "not real photographs")  # fmt: skip
    return "scikit-learn's 1,797 handwritten 8x8 digit scans, upscaled"


def _builtin_names() -> str:
    return ", ".join(BUILTIN_PREFIX + name for name in BUILTIN_DATASETS)


def _hold_out(source: TaskSource, settings: dict[str, Any], seed: int) -> tuple[TaskSource, TaskSource | None]:
    fraction = settings["eval_fraction"]
    if not fraction:
        return source, None
    if source.is_streaming:
        raise ValueError(
            f"source {source.name!r} is streamed, so no share of it can be held out for evaluation: set eval_split "
            "to a split of the data, or eval_fraction: 0 to evaluate nothing"
        )
    # A seeded split whose rows keep their numbers in the source, so errors name rows the user can find.
    order = np.random.default_rng(seed).permutation(source.num_rows)
    held = math.ceil(source.num_rows * fraction)

    def part(rows: np.ndarray, name: str) -> TaskSource:
        rows = np.sort(rows)  # sorted rows read in order from the Arrow table; the mixture shuffles them
        return source.derived(source.dataset.select(rows), name=name, row_numbers=rows)

    return part(order[held:], source.name), part(order[:held], f"{source.name}_eval")


def _first_rows(source: TaskSource, count: int) -> TaskSource:
    if source.is_streaming:
        rows, num_rows = source.dataset.take(count), min(count, source.num_rows or count)
    else:
        rows, num_rows = source.dataset.select(range(min(count, len(source.dataset)))), None
    row_numbers = None if source.is_streaming else source.row_numbers[: len(rows)]
    return source.derived(rows, num_rows=num_rows, row_numbers=row_numbers)


def _given_flags(parser: HfArgumentParser, flags: Sequence[str]) -> dict[str, Any]:
    """The arguments that `flags` set, typed by the parser, and nothing else (no defaults)."""
    if not flags:
        return {}
    flags = _negative_values_attached(flags)
    saved = [(action, action.default, action.required) for action in parser._actions]
    try:
        for action, _, _ in saved:
            action.default, action.required = argparse.SUPPRESS, False
        namespace, unknown = parser.parse_known_args(list(flags))
    finally:
        for action, default, required in saved:
            action.default, action.required = default, required
    if unknown:
        raise ValueError(f"unknown command-line argument(s) {unknown}: {flag_hints(parser, unknown)}; "
                         "see `mtl-hf train --help` for the names")  # fmt: skip
    return vars(namespace)


def flag_hints(parser: argparse.ArgumentParser, unknown: Sequence[str]) -> str:
    """Each unknown flag with the parser's closest one: `--learning_rat (did you mean --learning_rate?)`."""
    flags = [option for action in parser._actions for option in action.option_strings]
    hints = []
    for token in unknown:
        if token.startswith("-"):
            close = difflib.get_close_matches(token.split("=")[0], flags, n=1)
            hints.append(f"{token} (did you mean {close[0]}?)" if close else token)
    return ", ".join(hints) or "values without a flag"


def _negative_values_attached(flags: Sequence[str]) -> list[str]:
    """`--key -1e-3` as `--key=-1e-3`: argparse takes a value such as -1e-3 for a flag, not a number."""
    joined: list[str] = []
    for token in flags:
        if joined and joined[-1].startswith("--") and "=" not in joined[-1] and _is_number(token):
            joined[-1] = f"{joined[-1]}={token}"
        else:
            joined.append(token)
    return joined


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return token.startswith("-")


def _json_value(name: str, value: Any, kinds) -> Any:
    if value is None or not isinstance(value, str):
        if value is not None and not isinstance(value, kinds):
            raise ValueError(f"{name} must be a {_kind_names(kinds)}, got {type(value).__name__}")
        return value
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        if kinds == (dict, list) and value.strip():
            return [part.strip() for part in value.split(",") if part.strip()]  # a comma-separated column list
        raise ValueError(f"{name} must be a {_kind_names(kinds)} (YAML, or JSON on the command line), "
                         f"got {value!r}") from None  # fmt: skip
    if not isinstance(parsed, kinds):
        raise ValueError(f"{name} must be a {_kind_names(kinds)}, got {value!r}")
    return parsed


def _kind_names(kinds) -> str:
    kinds = kinds if isinstance(kinds, tuple) else (kinds,)
    return " or ".join({dict: "mapping", list: "list"}[kind] for kind in kinds)


def _resume_point(training_args: MultiTaskTrainingArguments) -> str | bool | None:
    resume = training_args.resume_from_checkpoint
    if resume is None or str(resume).lower() in ("false", "no", "none", ""):
        return None
    if str(resume).lower() in ("true", "yes", "last"):
        return True  # MultiTaskTrainer.train finds the last checkpoint in output_dir
    if not os.path.isdir(resume):
        raise FileNotFoundError(f"resume_from_checkpoint: no checkpoint folder at {resume}")
    return resume


LOCK_FILE = "_mtl_hf.lock"  # "_": left out of Hub uploads, like scratch files


@contextlib.contextmanager
def _output_dir_lock(training_args: MultiTaskTrainingArguments):
    """Creates output_dir and holds its lock while the run lasts, so that a second run into the same
    folder stops at once. The lock is the kernel's (flock): a killed run releases it too."""
    if training_args.process_index != 0:
        yield
        return
    folder = Path(training_args.output_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock = open(folder / LOCK_FILE, "a+")  # noqa: SIM115 (held open while the run lasts)
    except OSError as error:
        raise ValueError(f"output_dir {folder} cannot be written ({error.strerror or error}): choose another "
                         "--output_dir") from None  # fmt: skip
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        owner = lock.read().strip() or "unknown"
        lock.close()
        raise ValueError(f"output_dir {folder} is in use by another run (pid {owner}): wait for it to end, or "
                         "choose another --output_dir") from None  # fmt: skip
    lock.seek(0)
    lock.truncate()
    lock.write(str(os.getpid()))
    lock.flush()
    try:
        yield
    finally:
        lock.close()  # releases the lock


def _claim_output_dir(training_args: MultiTaskTrainingArguments) -> None:
    """A fresh run refuses an output_dir holding a previous run, unless told to overwrite it."""
    folder = Path(training_args.output_dir)
    checkpoints = sorted(folder.glob(f"{PREFIX_CHECKPOINT_DIR}-*")) if folder.is_dir() else []
    saved_model = (folder / "config.json").is_file()
    if not (checkpoints or saved_model):
        return
    if not training_args.overwrite_output_dir:
        found = f"checkpoints ({', '.join(path.name for path in checkpoints)})" if checkpoints else "a saved model"
        raise ValueError(
            f"output_dir {folder} holds a previous run's {found}: resume it with --resume_from_checkpoint true, "
            "choose another --output_dir, or pass --overwrite_output_dir true to replace it"
        )
    if training_args.process_index == 0:
        for checkpoint in checkpoints:  # else a later resume could pick up the old run's last checkpoint
            shutil.rmtree(checkpoint)
    if is_distributed():
        torch.distributed.barrier()


def _set_up_logging(training_args: MultiTaskTrainingArguments) -> None:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    level = training_args.get_process_log_level()
    logger.setLevel(logging.INFO if training_args.should_log else level)
    datasets.utils.logging.set_verbosity(level)
    transformers.utils.logging.set_verbosity(level)


if __name__ == "__main__":
    main()
