"""The recipe's data and model, assembled from its arguments: training and evaluation sources (built-in data,
folders, Parquet, object storage or the Hub; held-out shares; row caps), then the model and image processor
(from scratch, from a pretrained backbone, or a saved model to train further)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from transformers import AutoConfig

from ...data.backbone_processor import backbone_image_processor, model_image_processor
from ...data.builtin import BUILTIN_PREFIX, builtin_description, builtin_names, is_builtin, load_builtin
from ...data.locations import TableOptions, is_url, local_splits, require_path_or_hub_id
from ...data.row_keys import refuse_overlapping_evaluation
from ...data.selection import first_rows, hold_out
from ...data.sources import TaskSource
from ...data.transforms import ImageTransforms
from ...errors import UserError
from ...hub.lookup import hub_model_location
from ...models.mtl_vit.configuration_mtl_vit import MultiTaskViTConfig, TaskSpec
from ...models.mtl_vit.modeling_mtl_vit import MultiTaskViTModel
from ...tasks import check_agreement, merge_task_specs
from ..model_loading import loading_model
from .arguments import DataArguments, ModelArguments

logger = logging.getLogger(__name__)


def load_data(data_args: DataArguments, *, seed: int) -> tuple[list[TaskSource], list[TaskSource]]:
    """The training sources and the evaluation sources (with the training sources' label names); evaluation rows
    that are training rows too (by their hashed keys) are refused."""
    train_sources, eval_sources = [], []
    for settings in data_args.source_settings():
        train, evaluation = load_source(settings, seed=seed)
        if data_args.max_train_rows:
            train = first_rows(train, data_args.max_train_rows, fresh_statistics=True)
        if evaluation is not None and data_args.max_eval_rows:
            evaluation = first_rows(evaluation, data_args.max_eval_rows)
        train_sources.append(train)
        if evaluation is not None:
            eval_sources.append(evaluation)
    refuse_overlapping_evaluation(train_sources, eval_sources)
    return train_sources, eval_sources


def recipe_task_specs(sources: Sequence[TaskSource]) -> list[TaskSpec]:
    """Every source's tasks, once each (a task in several sources must be described alike)."""
    return merge_task_specs((source.name, source.task_specs) for source in sources)


def load_source(settings: dict[str, Any], *, seed: int) -> tuple[TaskSource, TaskSource | None]:
    """One entry of `DataArguments.source_settings()` as (training source, evaluation source or None)."""
    dataset, tasks = settings["dataset"], settings["tasks"]
    common = {"image_column": settings["image_column"], "bad_image_policy": settings["bad_image_policy"]}
    if settings["storage_options"] and not is_url(dataset):
        raise UserError(f"storage_options apply to datasets in object storage (s3://, gs://, ...), not to {dataset!r}")
    if is_builtin(dataset):
        return _load_builtin_source(settings, common, seed)
    if settings["dataset_options"]:
        raise UserError(f"dataset_options apply to built-in datasets ({builtin_names()}), not to {dataset!r}")
    common["storage_options"] = settings["storage_options"]
    common.update({key: settings[key] for key in ("id_column", "split_fractions", "separator")})
    train = TaskSource(
        dataset,
        tasks,
        name=settings["name"],
        split=settings["train_split"],
        streaming=settings["streaming"],
        num_rows=settings["num_rows"],
        **common,
    )
    eval_split = settings["eval_split"] or _validation_split(dataset, settings)
    if eval_split:
        evaluation = TaskSource(
            dataset,
            train.fixed_tasks(),
            name=f"{train.name}_{eval_split}",
            split=eval_split,
            streaming=settings["streaming"],
            **common,
        )
        return train, evaluation
    return hold_out(train, settings["eval_fraction"], seed)


def _validation_split(dataset: str, settings: dict[str, Any]) -> str | None:
    """'validation', where local data has such a split beside the training one and no eval_split is named."""
    table = TableOptions(
        key_column=settings["id_column"] or settings["image_column"], fractions=settings["split_fractions"]
    )
    splits = local_splits(dataset, table)
    if "validation" in splits and settings["train_split"] != "validation":
        logger.info("%s: evaluating on its 'validation' split (name another with eval_split)", dataset)
        return "validation"
    return None


def _load_builtin_source(settings: dict[str, Any], common: dict[str, Any], seed: int):
    dataset = settings["dataset"]
    train_rows, eval_rows = load_builtin(dataset, settings["dataset_options"], seed=seed)
    count = len(train_rows)
    if settings["streaming"]:
        train_rows = train_rows.to_iterable_dataset(num_shards=min(8, count))
    common = {**common, "description": builtin_description(dataset, settings["dataset_options"])}
    train = TaskSource(
        train_rows,
        settings["tasks"],
        name=settings["name"] or dataset.removeprefix(BUILTIN_PREFIX),
        num_rows=count if settings["streaming"] else None,
        **common,
    )
    if eval_rows is None:
        return hold_out(train, settings["eval_fraction"], seed)
    return train, TaskSource(eval_rows, train.fixed_tasks(), name=f"{train.name}_eval", **common)


def build_model(model_args: ModelArguments, task_specs: list[TaskSpec]):
    """The model (continued, from a pretrained backbone, or from scratch) and its image processor."""
    for field_name in ("model_name_or_path", "backbone"):
        if getattr(model_args, field_name):
            require_path_or_hub_id(getattr(model_args, field_name), "model folder", where=f"{field_name}: ")
    if model_args.model_name_or_path:
        with loading_model(model_args.model_name_or_path):
            return _continued_model(model_args, task_specs)
    if model_args.backbone:
        location = model_location(model_args.backbone)
        with loading_model(model_args.backbone):
            model = MultiTaskViTModel.from_backbone(
                location,
                task_specs,
                cache_dir=model_args.cache_dir,
                allow_pickled_weights=model_args.allow_pickled_weights,
            )
            model.config.backbone_config._name_or_path = model_args.backbone  # the id, not a cache folder
            processor = backbone_image_processor(location, model.config.backbone_config, cache_dir=model_args.cache_dir)
        return model, processor
    options = dict(model_args.backbone_config)
    try:
        backbone = AutoConfig.for_model(options.pop("model_type", "vit"), **options)
        config = MultiTaskViTConfig(backbone_config=backbone, tasks=task_specs)
    except (TypeError, ValueError) as error:  # the configs' own checks of what the recipe gave
        raise UserError(f"backbone_config: {error}") from None
    model = MultiTaskViTModel(config)
    return model, ImageTransforms(size=model.image_size).image_processor()


def model_location(name: str) -> str:
    """A local folder as it is; a Hub id after one short request (see `hub.lookup`), or its cached copy."""
    return name if Path(name).exists() else hub_model_location(name)


def _continued_model(model_args: ModelArguments, task_specs: list[TaskSpec]):
    location = model_location(model_args.model_name_or_path)
    model = MultiTaskViTModel.from_pretrained(
        location,
        cache_dir=model_args.cache_dir,
        allow_pickled_weights=model_args.allow_pickled_weights,
    )
    model_specs = {spec.name: spec for spec in model.config.task_specs}
    data_names, model_names = [spec.name for spec in task_specs], list(model_specs)
    if sorted(data_names) != sorted(model_names):
        raise UserError(
            f"the data's tasks {data_names} differ from those of {model_args.model_name_or_path} "
            f"{model_names}; use backbone: to start new heads from its weights, or add/remove tasks "
            "first"
        )
    for spec in task_specs:
        check_agreement(
            model_specs[spec.name],
            model_args.model_name_or_path,
            spec,
            "the data",
            fix="use backbone: to start new heads from its weights",
        )
    # A folder saved by `save_pretrained` alone has no processor: the one its backbone implies (with a notice).
    return model, model_image_processor(location, model.config)


__all__ = ["build_model", "load_data", "load_source", "model_location", "recipe_task_specs"]
