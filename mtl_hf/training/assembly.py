"""What a trainer's arguments describe, checked against the model: the task mixture for this rank, the optimizer
steps `Trainer.train` will take on it, and the balancing method."""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

from ..balancing import WeightingMethod, build_weighting
from ..data.columns import STATISTICS_STREAM_ROWS
from ..data.mixture import TaskMixture
from ..data.row_keys import hashed_keys, key_column, unique_keys
from ..data.sources import TaskSource
from ..errors import UserError
from ..models.mtl_vit.configuration_mtl_vit import TaskSpec, checked_lora
from ..models.mtl_vit.tasks_mtl_vit import BALANCED
from ..tasks import check_agreement
from .arguments import MultiTaskTrainingArguments
from .parameter_groups import backbone_layer_ids

logger = logging.getLogger(__name__)


def build_task_mixture(sources: TaskSource | Sequence[TaskSource], args: MultiTaskTrainingArguments) -> TaskMixture:
    """The training mixture the sampling arguments describe, for this process's rank."""
    return TaskMixture(
        sources,
        batch_size=args.per_device_train_batch_size,
        strategy=args.sampling_strategy,
        temperature=args.sampling_temperature,
        weights=args.sampling_weights,
        batch_mode=args.batch_mode,
        when_exhausted=args.when_exhausted,
        steps_per_epoch=args.steps_per_epoch,
        shuffle_buffer_size=args.shuffle_buffer_size,
        seed=args.seed,
        rank=args.process_index,
        world_size=args.world_size,
    )


def planned_optimizer_steps(mixture: TaskMixture, args: MultiTaskTrainingArguments) -> int:
    """The optimizer steps `Trainer.train` will take on `mixture`: `max_steps`, or the epochs' worth of batches."""
    if args.max_steps > 0:
        return args.max_steps
    steps_per_epoch = max(len(mixture) // args.gradient_accumulation_steps, 1)
    return math.ceil(args.num_train_epochs * steps_per_epoch)


def training_mixture(data, args: MultiTaskTrainingArguments, model_specs: Mapping[str, TaskSpec]) -> TaskMixture:
    """The mixture of `data` (sources, or a ready `TaskMixture` for this rank), whose tasks the model must have."""
    if isinstance(data, TaskMixture):
        mixture = data
        if (mixture.rank, mixture.world_size) != (args.process_index, args.world_size):
            raise UserError(
                f"the TaskMixture was built for rank {mixture.rank} of {mixture.world_size}, but this process "
                f"is rank {args.process_index} of {args.world_size}: pass the sources instead and let the "
                "trainer build it"
            )
    else:
        mixture = build_task_mixture(data, args)
    unknown = [name for name in mixture.task_names if name not in model_specs]
    if unknown:
        raise UserError(
            f"the training data has task(s) {unknown} that the model lacks; model tasks: {list(model_specs)}"
        )
    for spec in mixture.task_specs:
        check_agreement(
            spec,
            "the data",
            model_specs[spec.name],
            "the model",
            fix="give the task the model's labels, or give the model a new head for it (remove_task / add_task)",
        )
    return mixture


def prepare_model(model, args: MultiTaskTrainingArguments, mixture: TaskMixture | None) -> None:
    """What the arguments and the training data settle in the model before the first step, recorded in its
    config: LoRA adapters, label smoothing, regression target statistics and label counts; a layer-wise decay
    the backbone cannot take is refused here rather than at the first step."""
    add_lora_adapters(model, args)
    freeze_heads(model, args.frozen_tasks)
    apply_label_smoothing_factor(model, args.label_smoothing_factor)
    if mixture is not None:
        adopt_target_statistics(model, mixture)
        adopt_label_counts(model, mixture)
    if args.layer_decay is not None:
        backbone_layer_ids(model.backbone)


def adopt_target_statistics(model, mixture: TaskMixture) -> None:
    """A model whose regression tasks standardise their targets but know no statistics yet (built from specs
    without them) takes those of its training data, once, before any step."""
    for spec in mixture.task_specs:
        own = model.config.get_task(spec.name)
        if own.type == "regression" and own.target_scaling == "standard" and own.target_statistics is None:
            if spec.target_statistics is not None:
                model.set_target_scaling(spec.name, "standard", spec.target_statistics)
                logger.info(
                    "task %r: targets standardised with the training rows' %s", spec.name, spec.target_statistics
                )


def adopt_label_counts(model, mixture: TaskMixture) -> None:
    """A model task with `"balanced"` class or positive weights and no `label_counts` yet takes those of its
    training rows (summed over the sources that label it), once, before any step."""
    for spec in model.config.task_specs:
        if spec.label_counts is not None or BALANCED not in (spec.class_weights, spec.pos_weight):
            continue
        sources = [source for source in mixture.sources if spec.name in source.task_names]
        if not sources:
            continue
        tallies = [source.label_counts(spec.name) for source in sources]
        counts = {
            "counts": [sum(column) for column in zip(*(tally["counts"] for tally in tallies), strict=True)],
            "rows": sum(tally["rows"] for tally in tallies),
        }
        streaming = [source.name for source in sources if source.is_streaming]
        try:
            model.update_task(spec.name, label_counts=counts)
        except ValueError as error:
            raise UserError(str(error)) from None
        logger.info(
            "task %r: balanced weights from the label counts of %d training rows%s: %s",
            spec.name,
            counts["rows"],
            f" (the first {STATISTICS_STREAM_ROWS} rows of streaming source(s) {streaming})" if streaming else "",
            counts["counts"],
        )


def freeze_heads(model, tasks: list[str] | None) -> None:
    """The heads of `tasks` take no gradient: neither the optimizer nor DDP holds them."""
    unknown = [name for name in tasks or () if name not in model.task_names]
    if unknown:
        raise UserError(f"frozen_tasks names {unknown}, which the model lacks; its tasks are {model.task_names}")
    for name in tasks or ():
        model.heads[name].requires_grad_(False)


def add_lora_adapters(model, args: MultiTaskTrainingArguments) -> None:
    """The LoRA adapters `args.lora_*` ask for, added to the model's backbone; a model that has them already (a
    saved LoRA model trained further, or resumed) must have the same ones."""
    if args.lora_rank is None:
        return
    try:
        if model.config.lora is None:
            model.add_lora(args.lora_rank, args.lora_alpha, args.lora_dropout, args.lora_target_modules)
            logger.info(
                "LoRA adapters %s; trainable backbone parameters: %d",
                model.config.lora,
                sum(p.numel() for p in model.backbone.parameters() if p.requires_grad),
            )
            return
        wanted = checked_lora(
            {
                "rank": args.lora_rank,
                "alpha": args.lora_alpha,
                "dropout": args.lora_dropout,
                "target_modules": args.lora_target_modules or model.config.lora["target_modules"],
            }
        )
    except ValueError as error:
        raise UserError(str(error)) from None
    if wanted != model.config.lora:
        raise UserError(
            f"the model has LoRA adapters {model.config.lora} and the arguments ask for {wanted}; give the same "
            "settings, or merge the model's first (mtl-hf merge)"
        )


def apply_label_smoothing_factor(model, factor: float) -> None:
    """Trainer's `label_smoothing_factor` becomes the `label_smoothing` of every classification task that sets
    none of its own (recorded in the config); refused where the model has no classification task."""
    if not factor:
        return
    classification = [spec for spec in model.config.task_specs if spec.type == "classification"]
    if not classification:
        raise UserError(
            f"label_smoothing_factor {factor:g} smooths classification targets, and this model has no "
            "classification task; leave it at 0"
        )
    for spec in classification:
        if spec.label_smoothing is None:
            model.update_task(spec.name, label_smoothing=factor)
    logger.info(
        "label smoothing per task: %s",
        {spec.name: spec.label_smoothing for spec in model.config.task_specs if spec.type == "classification"},
    )


def record_training_data(model, mixture: TaskMixture) -> None:
    """Adds the training sources' locations and splits to `config.training_data`, and their rows' hashed keys to
    `model.training_row_keys` (both kept from earlier training), so that `mtl-hf eval` can refuse to score them as
    if they were held out, wherever the same rows turn up again (see `data/row_keys.py`)."""
    entries = list(model.config.training_data or [])
    keys = [model.training_row_keys]
    for source in mixture.sources:
        keys.append(hashed_keys(source))
        origin = source.context.origin
        if origin is None or model.config.trained_on(origin["data"], origin["split"]):
            continue
        entry = {**origin, "rows": source.num_rows, "image_column": source.image_column}
        if keys[-1] is not None:
            entry["row_keys"] = key_column(source)
        entries.append(entry)
    model.config.training_data = entries or None
    recorded = unique_keys(*keys)
    model.training_row_keys = recorded if len(recorded) else None


def training_weighting(
    weighting: WeightingMethod | None,
    args: MultiTaskTrainingArguments,
    model_specs: Mapping[str, TaskSpec],
    mixture: TaskMixture | None,
    *,
    sharded: bool,
) -> WeightingMethod:
    """The balancing method (`weighting`, or the arguments' own) on the model's tasks and device, each task's
    `loss_weight` as its prior; a gradient method is refused where it cannot run (fp16, `sharded` models)."""
    weighting = weighting or build_weighting(args.weighting, list(model_specs), args.weighting_options)
    weighting = weighting.to(args.device)
    weighting.set_priors([spec.loss_weight for spec in model_specs.values()])
    if list(weighting.task_names) != list(model_specs):
        raise UserError(f"the weighting's tasks {weighting.task_names} differ from the model's {list(model_specs)}")
    if not weighting.uses_gradients:
        return weighting
    where = f"weighting {weighting.name!r}"
    if args.torch_compile:
        raise UserError(
            f"{where} back-propagates each task's loss on its own (retain_graph), which a compiled backward does not "
            "allow; with torch_compile use a loss-based method (e.g. equal, uncertainty, famo), or leave it off"
        )
    if args.freeze_backbone and args.unfreeze_backbone_at_step is None:
        raise UserError(
            f"{where} combines the tasks' gradients on the shared backbone, which freeze_backbone keeps frozen for "
            "the whole run; use a loss-based method (e.g. equal, uncertainty, famo), or set "
            "unfreeze_backbone_at_step (the heads train on their own losses until then)"
        )
    if args.fp16:
        raise UserError(
            f"{where} combines raw per-task gradients and cannot work under fp16 loss scaling; use bf16 or fp32"
        )
    if sharded:
        raise UserError(
            f"{where} has not been run under DeepSpeed or FSDP by this project; use DDP, or a loss-based method"
        )
    if mixture is not None and args.batch_mode == "homogeneous":
        single = [s.name for s in mixture.sources if len(s.task_names) == 1]
        if single:
            logger.warning(
                "%s acts only where a batch holds several tasks, and homogeneous batches from sources "
                "%s hold one: use batch_mode='mixed' for gradient surgery across them",
                where,
                single,
            )
    return weighting


# Trainer arguments whose job MultiTaskTrainer does its own way: accepted silently, they would change nothing.
IGNORED_ARGUMENTS = {
    "compute_metrics": "each task is scored by its type's metrics (eval_<task>_<metric>); for metrics of your "
    "own per task, pass compute_task_metrics=fn(task, logits, targets) -> dict",
    "preprocess_logits_for_metrics": "each task's logits are gathered and scored as they are (compute_task_metrics "
    "receives them per task)",
    "compute_loss_func": "each task's loss follows from its type and the weighting combines them",
    "model_init": "the trainer needs the model itself, for its tasks",
}

REFUSED_TRAINING_ARGUMENTS = {
    "dataloader_drop_last": "the task mixture makes the batches (steps_per_epoch, when_exhausted)",
    "train_sampling_strategy": "sampling_strategy and batch_mode choose how batches are drawn",
    "data_seed": "the mixture's order follows seed",
    "auto_find_batch_size": "the mixture is built for per_device_train_batch_size; lower it yourself",
    "eval_accumulation_steps": "evaluation keeps each task's logits per task on the host already",
    "eval_do_concat_batches": "evaluation concatenates each task's batches to score them",
    "batch_eval_metrics": "each task is scored once, on all its evaluated rows",
    "include_for_metrics": "compute_task_metrics receives each task's logits and targets",
    "prediction_loss_only": "evaluation reports every task's metrics with its loss",
    "label_names": "the targets are the labels dict, one entry per task",
    "remove_unused_columns": "the task sources keep only the image and label columns",
    "neftune_noise_alpha": "it adds noise to a language model's token embeddings",
    "include_num_input_tokens_seen": "images have no input tokens to count",
}
"""`TrainingArguments` fields that MultiTaskTrainer's own data path, loss or evaluation replace, and why; set to
anything but their default, they are refused. The fields it replaces and honours are in `HONOURED_ARGUMENTS`."""

HONOURED_ARGUMENTS = {
    "label_smoothing_factor": "the label_smoothing of every classification task without its own",
    "ignore_data_skip": "always on: the mixture restores its own position on resume",
    "dataloader_num_workers": "the training DataLoader's workers",
    "dataloader_pin_memory": "the training DataLoader's pinned memory, on CUDA",
    "dataloader_persistent_workers": "the training DataLoader's workers kept between epochs",
    "dataloader_prefetch_factor": "the training DataLoader's batches ahead per worker",
    "per_device_train_batch_size": "the mixture's batch size",
    "per_device_eval_batch_size": "the evaluation batches",
    "seed": "the mixture's order, and each rank's share",
}


def refuse_ignored_arguments(args: MultiTaskTrainingArguments, kwargs: Mapping[str, Any]) -> None:
    """A Trainer argument that MultiTaskTrainer would ignore is refused in one line, never dropped silently."""
    for name, reason in IGNORED_ARGUMENTS.items():
        if kwargs.get(name) is not None:
            raise UserError(f"MultiTaskTrainer does not take {name}: {reason}; leave it out")
    defaults = {
        field.name: field.default if field.default is not dataclasses.MISSING else field.default_factory()
        for field in dataclasses.fields(MultiTaskTrainingArguments)
        if field.name in REFUSED_TRAINING_ARGUMENTS
    }
    for name, reason in REFUSED_TRAINING_ARGUMENTS.items():
        value = getattr(args, name)
        if value != defaults[name]:
            raise UserError(
                f"{name}={value!r} has no effect in MultiTaskTrainer ({reason}); leave it at {defaults[name]!r}"
            )


__all__ = [
    "HONOURED_ARGUMENTS",
    "IGNORED_ARGUMENTS",
    "REFUSED_TRAINING_ARGUMENTS",
    "add_lora_adapters",
    "adopt_label_counts",
    "adopt_target_statistics",
    "apply_label_smoothing_factor",
    "build_task_mixture",
    "planned_optimizer_steps",
    "prepare_model",
    "record_training_data",
    "refuse_ignored_arguments",
    "training_mixture",
    "training_weighting",
]
