"""`MultiTaskTrainer`: the stock `Trainer`, fed by a `TaskMixture`, balancing the tasks.

What it adds to `Trainer`, each part in a module of its own:
- training batches come from a `TaskMixture` (built from the sources and the sampling arguments),
  whose position is saved in every checkpoint and restored on resume, so a resumed run sees
  exactly the batches an uninterrupted one would (Trainer's own batch skipping is off);
- `compute_loss` turns the model's per-task losses (`task_losses`: present tasks, DDP-consistent
  rescaling) into one loss with a balancing method (`weighting`); gradient methods take the
  gradient path (`gradient_path`): in representation space inside `compute_loss`, so Trainer's
  own backward does the rest, in parameter space through `training_step`;
- the logs carry `loss_<task>` and `weight_<task>` at every logging step (`task_logs`), and
  methods that learn from the step's effect see its batches replayed after it (`step_replay`);
- `evaluate` / `predict` run every task on its own eval data and report `eval_<task>_<metric>`
  plus `eval_average_score`, with metrics from `evaluate` modules shipped in the package.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import Trainer, TrainerCallback, TrainerState
from transformers.trainer_utils import (
    PredictionOutput,
    TrainOutput,
    speed_metrics,
)

from ..balancing import WeightingMethod, build_weighting
from ..balancing.gradient_path import FeatureTap, parameter_space_backward, representation_loss
from ..balancing.step_losses import StepLosses, step_losses
from ..data import ImageTransforms, MixtureBatch, MultiTaskCollator, MultiTaskDataLoader, TaskMixture, TaskSource
from ..hub.card import CURVES_FILE, build_model_card
from ..hub.curves import plot_training_curves
from ..metrics import PRIMARY_METRIC, load_task_metric
from ..models.mtl_vit.configuration_mtl_vit import TaskSpec
from ..models.mtl_vit.modeling_mtl_vit import MultiTaskViTModel
from ..utils.distributed import all_reduce_sum, is_distributed, world_size
from .arguments import MultiTaskTrainingArguments
from .bad_images import BadImageTally
from .checkpoint_state import MultiTaskStateCallback, last_complete_checkpoint, load_multitask_state
from .loss_guard import LossGuard
from .step_replay import StepReplay
from .task_logs import TaskLogs

logger = logging.getLogger(__name__)

CHANCE_RESULTS_FILE = "eval_chance_results.json"
"""Chance scores the recipe writes beside the model (`save_metrics("eval_chance", ...)`); the card shows them."""


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


class MultiTaskTrainer(Trainer):
    r"""
    Args:
        model (`MultiTaskViTModel`): the model to train.
        args (`MultiTaskTrainingArguments`): training, sampling, balancing and evaluation settings.
        train_dataset (`TaskMixture`, `TaskSource` or `list[TaskSource]`, *optional*): the training
            data. Sources are mixed with the sampling arguments; a ready `TaskMixture` is used as is.
        eval_dataset (`TaskSource`, `list[TaskSource]` or `dict[str, TaskSource]`, *optional*): each
            source is evaluated on the tasks it labels.
        processing_class (image processor, *optional*): its size, mean and std drive the transforms
            and it is saved with the model. Defaults to a `ViTImageProcessor` for the backbone's size.
        image_transforms (`ImageTransforms`, *optional*): the training transform (its eval variant
            is used for evaluation). Defaults to one built from `processing_class`.
        weighting (`WeightingMethod`, *optional*): a ready balancing method; defaults to
            `args.weighting` with `args.weighting_options`.
        Other keyword arguments go to `Trainer`.
    """

    def __init__(
        self,
        model: MultiTaskViTModel,
        args: MultiTaskTrainingArguments,
        train_dataset: TaskMixture | TaskSource | Sequence[TaskSource] | None = None,
        eval_dataset: TaskSource | Sequence[TaskSource] | Mapping[str, TaskSource] | None = None,
        processing_class: Any = None,
        image_transforms: ImageTransforms | None = None,
        weighting: WeightingMethod | None = None,
        **kwargs,
    ):
        if not isinstance(args, MultiTaskTrainingArguments):
            raise TypeError(f"args must be MultiTaskTrainingArguments, got {type(args).__name__}")
        if not isinstance(model, MultiTaskViTModel):
            raise TypeError(f"model must be a MultiTaskViTModel, got {type(model).__name__}")
        if kwargs.get("data_collator") is not None:
            raise ValueError("the collator follows from the tasks and transforms; pass image_transforms instead")
        self.task_specs = {spec.name: spec for spec in model.config.task_specs}

        if image_transforms is None:
            if processing_class is None:
                size = model.config.backbone_config.image_size
                size = tuple(size) if isinstance(size, (list, tuple)) else (size, size)
                image_transforms = ImageTransforms(size=size, train=True)
            else:
                image_transforms = ImageTransforms.from_image_processor(processing_class, train=True)
        if processing_class is None:
            processing_class = image_transforms.image_processor()
        self.image_transforms = image_transforms
        self.train_mixture = self._build_mixture(train_dataset, args) if train_dataset is not None else None
        self.eval_sources = _named_sources(eval_dataset)

        if args.ignore_data_skip is False:
            # The mixture restores its own position from the checkpoint; Trainer must not also
            # fast-forward (and decode) the batches already seen.
            args.ignore_data_skip = True
        super().__init__(
            model=model,
            args=args,
            train_dataset=self.train_mixture,
            eval_dataset=self.eval_sources or None,  # read only by our evaluate()
            processing_class=processing_class,
            **kwargs,
        )
        self.weighting = (weighting or self._build_weighting(args)).to(args.device)
        self.weighting.set_priors([spec.loss_weight for spec in self.task_specs.values()])
        if list(self.weighting.task_names) != list(self.task_specs):
            raise ValueError(
                f"the weighting's tasks {self.weighting.task_names} differ from the model's {list(self.task_specs)}"
            )
        self._check_weighting_fits()
        self.add_callback(_WeightingCallback(self))
        self.add_callback(MultiTaskStateCallback(self.multitask_state))
        self.task_logs = TaskLogs(list(self.task_specs))
        self.loss_guard = LossGuard(args.nan_policy, list(self.task_specs))
        train_sources = self.train_mixture.sources if self.train_mixture is not None else []
        skipping = [source.name for source in train_sources if source.bad_image_policy == "skip"]
        self.bad_images = BadImageTally(skipping, args.max_bad_image_fraction, device=args.device) if skipping else None
        self._step_replay = StepReplay()
        self._features = (
            FeatureTap(model.backbone)
            if self.weighting.uses_gradients and args.gradient_space == "representation"
            else None
        )
        self._pending_mixture_state: dict | None = None
        self._step_skipped = False
        self._train_loader: MultiTaskDataLoader | None = None

    # -- construction ------------------------------------------------------------------------

    def _build_mixture(self, data, args: MultiTaskTrainingArguments) -> TaskMixture:
        if isinstance(data, TaskMixture):
            mixture = data
            if (mixture.rank, mixture.world_size) != (args.process_index, args.world_size):
                raise ValueError(
                    f"the TaskMixture was built for rank {mixture.rank} of {mixture.world_size}, but this process "
                    f"is rank {args.process_index} of {args.world_size}: pass the sources instead and let the "
                    "trainer build it"
                )
        else:
            mixture = build_task_mixture(data, args)
        unknown = [name for name in mixture.task_names if name not in self.task_specs]
        if unknown:
            raise ValueError(
                f"the training data has task(s) {unknown} that the model lacks; model tasks: {list(self.task_specs)}"
            )
        for spec in mixture.task_specs:
            model_spec = self.task_specs[spec.name]
            if (spec.type, spec.num_outputs, spec.labels) != (
                model_spec.type,
                model_spec.num_outputs,
                model_spec.labels,
            ):
                raise ValueError(
                    f"task {spec.name!r} differs between the data ({spec.type}, labels {spec.labels}) and the model "
                    f"({model_spec.type}, labels {model_spec.labels}): give the task the model's labels, or give the "
                    "model a new head for it (remove_task / add_task)"
                )
        return mixture

    def _build_weighting(self, args: MultiTaskTrainingArguments) -> WeightingMethod:
        return build_weighting(args.weighting, list(self.task_specs), args.weighting_options)

    def _check_weighting_fits(self) -> None:
        if not self.weighting.uses_gradients:
            return
        where = f"weighting {self.weighting.name!r}"
        if self.args.fp16:
            raise ValueError(
                f"{where} combines raw per-task gradients and cannot work under fp16 loss scaling; use bf16 or fp32"
            )
        if self.is_deepspeed_enabled or self.is_fsdp_enabled:
            raise ValueError(
                f"{where} has not been run under DeepSpeed or FSDP by this project; use DDP, or a loss-based method"
            )
        if self.train_mixture is not None and self.args.batch_mode == "homogeneous":
            single = [s.name for s in self.train_mixture.sources if len(s.task_names) == 1]
            if single:
                logger.warning(
                    "%s acts only where a batch holds several tasks, and homogeneous batches from sources %s hold "
                    "one: use batch_mode='mixed' for gradient surgery across them",
                    where, single,
                )  # fmt: skip

    # -- training data -----------------------------------------------------------------------

    def get_train_dataloader(self) -> MultiTaskDataLoader:
        if self.train_mixture is None:
            raise ValueError("MultiTaskTrainer: training needs a train_dataset (task sources or a TaskMixture)")
        workers = self.args.dataloader_num_workers
        loader = self.train_mixture.dataloader(
            MultiTaskCollator(self.train_mixture.task_specs, self.image_transforms, with_rows=True),
            num_workers=workers,
            pin_memory=self.args.dataloader_pin_memory and torch.cuda.is_available(),
            persistent_workers=self.args.dataloader_persistent_workers and workers > 0,
            prefetch_factor=self.args.dataloader_prefetch_factor if workers > 0 else None,
        )
        if self._pending_mixture_state is not None:
            loader.load_state_dict(self._pending_mixture_state)
            self._pending_mixture_state = None
        else:
            self.train_mixture.set_epoch(0)  # a fresh run starts at the beginning, whatever ran before
        # Batches go to the device in `_prepare_inputs`; each rank already reads its own share.
        self._train_loader = loader
        return loader

    def num_examples(self, dataloader) -> int:
        if isinstance(dataloader, MultiTaskDataLoader):
            return len(dataloader) * dataloader.mixture.batch_size
        return super().num_examples(dataloader)

    # -- losses ------------------------------------------------------------------------------

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        training = model.training and torch.is_grad_enabled()
        rows = self._take_reports(inputs)
        if training and self.weighting.needs_losses_after_step:
            self._step_replay.record(inputs, inputs["pixel_values"].device)
        outputs = model(**inputs)
        losses = step_losses(self.task_specs, outputs, inputs["labels"])
        if training:
            self.loss_guard.watch(losses, rows)
        if self._features is not None and training:
            loss, weights = representation_loss(self.weighting, losses, self._features.take())
        elif self.weighting.uses_gradients:  # outside training: the prior-weighted sum
            weights = self.weighting.prior_weights(losses.present)
            loss = (weights * losses.local).sum()
        else:
            weights = self.weighting.task_weights(losses.mean, losses.present)
            loss = self.weighting.combine(losses.local, weights, losses.present)
        if training:
            self._observe(losses, weights)
        return (loss, outputs) if return_outputs else loss

    def _take_reports(self, inputs: dict) -> list[str] | None:
        """Removes the batch's reports (not model inputs): counts its skipped images; returns its rows."""
        counts = inputs.pop("image_counts", None)
        if self.bad_images is not None:
            self.bad_images.add(counts)
        return inputs.pop("rows", None)

    def _observe(self, losses: StepLosses, weights: torch.Tensor) -> None:
        # A non-finite loss must not reach the weighting's state or the logs (inf * a 0 mask is NaN).
        usable = self.loss_guard.finite_present(losses)
        means = torch.where(usable, losses.mean, torch.zeros_like(losses.mean))
        self.task_logs.add(means, weights, usable)
        self.weighting.observe(means, usable)

    def training_step(self, model, inputs, num_items_in_batch=None):
        if not (self.weighting.uses_gradients and self.args.gradient_space == "parameters"):
            return super().training_step(model, inputs, num_items_in_batch)
        model.train()
        inputs = self._prepare_inputs(inputs)
        rows = self._take_reports(inputs)
        # DDP must not average these gradients: the gradient path reduces them itself, per task.
        with self.accelerator.no_sync(model), self.compute_loss_context_manager():
            outputs = model(**inputs)
        losses = step_losses(self.task_specs, outputs, inputs["labels"])
        self.loss_guard.watch(losses, rows)
        unwrapped = self.accelerator.unwrap_model(model)
        scale = 1.0 / self.current_gradient_accumulation_steps
        weights = parameter_space_backward(
            self.weighting, losses,
            shared=[p for p in unwrapped.backbone.parameters() if p.requires_grad],
            heads=[p for p in unwrapped.heads.parameters() if p.requires_grad],
            scale=scale,
        )  # fmt: skip
        self._observe(losses, weights)
        return (self.weighting.prior_weights(losses.present) * losses.local).sum().detach() * scale

    # -- hooks around the optimizer step -------------------------------------------------------

    def create_optimizer(self, model=None):
        optimizer = super().create_optimizer(model)
        learned = [p for p in self.weighting.parameters() if p.requires_grad]
        if learned:
            optimizer.add_param_group({"params": learned, "weight_decay": 0.0})
        return optimizer

    def _drop_gradients(self) -> None:
        # Parameters without a gradient are left alone by torch's optimizers, moments included.
        for parameter in [*self.model.parameters(), *self.weighting.parameters()]:
            parameter.grad = None

    def _sync_weighting_gradients(self) -> None:
        for parameter in self.weighting.parameters():
            if parameter.grad is not None:
                all_reduce_sum(parameter.grad).div_(world_size())

    def _end_weighting_step(self) -> None:
        if not self.weighting.needs_losses_after_step:
            self.weighting.end_step()
            return
        model = self.model_wrapped

        def forward(inputs):
            with self.compute_loss_context_manager():
                outputs = model(**inputs)
            return step_losses(self.task_specs, outputs, inputs["labels"])

        replayed = self._step_replay.replay(forward)
        sums = torch.stack([losses.mean * losses.present for losses in replayed]).sum(0)
        counts = torch.stack([losses.present for losses in replayed]).float().sum(0)
        self.weighting.end_step(sums / counts.clamp_min(1), counts > 0)

    # -- logs ------------------------------------------------------------------------------------

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:
            logs.update(self.task_logs.flush())
            if self.loss_guard.skipped_steps:
                logs["skipped_steps"] = self.loss_guard.skipped_steps
            if self.bad_images is not None:
                logs.update(self.bad_images.check())
        super().log(logs, start_time)

    # -- saving: model, curves and card together --------------------------------------------------

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Saves the model and image processor, plus the per-task curves PNG and the model card beside them.

        Checkpoints (`_internal_call`) keep the parameters' live names, which Trainer's loaders read as
        they are; saved models keep transformers' original names (see `save_in_original_format`).
        """
        model = self.accelerator.unwrap_model(self.model)
        model.save_in_original_format = not _internal_call
        try:
            super().save_model(output_dir, _internal_call)
        finally:
            model.save_in_original_format = True
        if self.args.should_save:
            self._write_card(output_dir or self.args.output_dir)

    def create_model_card(self, model_name: str | None = None, dataset=None, license: str | None = None, **kwargs):
        """Writes the multi-task model card to `output_dir/README.md` (Trainer's `push_to_hub` calls this)."""
        if self.is_world_process_zero():
            self._write_card(self.args.output_dir, model_name=model_name, datasets=dataset, license=license)

    def training_summary(self) -> dict[str, Any]:
        """How this trainer trains, for the model card: sources, mixing, balancing and hyperparameters."""
        args = self.args
        sources = self.train_mixture.sources if self.train_mixture is not None else []
        hyperparameters = {
            "learning_rate": args.learning_rate,
            "train_batch_size (per device)": args.per_device_train_batch_size,
            "gradient_accumulation_steps": args.gradient_accumulation_steps,
            "devices": args.world_size,
            "optimizer": args.optim.value if hasattr(args.optim, "value") else args.optim,
            "lr_scheduler": getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type),
            "weight_decay": args.weight_decay,
            "steps trained": self.state.global_step,
            "precision": "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32",
            "seed": args.seed,
        }
        return {
            "sources": [
                {"name": s.name, "rows": s.num_rows, "tasks": s.task_names, "description": s.description}
                for s in sources
            ],
            "evaluation": [{"name": s.name, "rows": s.num_rows} for s in self.eval_sources.values()],
            "sampling_strategy": args.sampling_strategy,
            "batch_mode": args.batch_mode,
            "when_exhausted": args.when_exhausted,
            "weighting": args.weighting,
            "weighting_options": args.weighting_options,
            "gradient_space": args.gradient_space if self.weighting.uses_gradients else None,
            "hyperparameters": hyperparameters,
        }

    def _write_card(self, folder: str, *, model_name=None, datasets=None, license=None) -> None:
        folder = str(folder)
        os.makedirs(folder, exist_ok=True)
        model = self.accelerator.unwrap_model(self.model)
        curves = plot_training_curves(
            self.state.log_history, model.config.task_specs, os.path.join(folder, CURVES_FILE)
        )
        evaluations = [entry for entry in self.state.log_history if "eval_average_score" in entry]
        if datasets is None and self.train_mixture is not None:
            datasets = [s.hub_id for s in self.train_mixture.sources if s.hub_id]
        elif isinstance(datasets, str):
            datasets = [datasets]
        model_id = self.args.hub_model_id or folder
        card = build_model_card(
            model.config,
            model_name=model_name or (self.args.hub_model_id or os.path.abspath(self.args.output_dir)).split("/")[-1],
            model_id=model_id,
            metrics=evaluations[-1] if evaluations else None,
            training=self.training_summary(),
            datasets=datasets or None,
            curves_file=CURVES_FILE if curves is not None else None,
            multilabel_threshold=self.args.multilabel_threshold,
            license=license,
            chance=_read_json(os.path.join(folder, CHANCE_RESULTS_FILE)),
        )
        card.save(os.path.join(folder, "README.md"))

    # -- checkpoints -----------------------------------------------------------------------------

    def multitask_state(self) -> dict[str, Any]:
        """What a checkpoint needs beyond Trainer's own state: the mixture's position and the weighting's state."""
        return {
            "mixture": self._train_loader.state_dict() if self._train_loader is not None else None,
            "weighting": self.weighting.state_dict(),
            "weighting_name": self.weighting.name,
        }

    def resolve_checkpoint(self, resume_from_checkpoint: str | bool | None) -> str | None:
        """The checkpoint folder `train(resume_from_checkpoint=...)` resumes from (True: the last in output_dir)."""
        if resume_from_checkpoint is True:
            resume_from_checkpoint = last_complete_checkpoint(self.args.output_dir)
        return resume_from_checkpoint or None

    def _restore_complete_run(self, checkpoint: str) -> TrainOutput:
        # Trainer would take one more step past the end (and save it); a finished run only needs
        # its weights and state back.
        logger.warning("%s is the end of the planned schedule: nothing to train. Raise max_steps or "
                       "num_train_epochs to train further.", checkpoint)  # fmt: skip
        self._load_from_checkpoint(checkpoint)
        self.state = TrainerState.load_from_json(os.path.join(checkpoint, "trainer_state.json"))
        losses = [entry["train_loss"] for entry in self.state.log_history if "train_loss" in entry]
        return TrainOutput(self.state.global_step, losses[-1] if losses else math.nan, {})

    def completed_steps(self, checkpoint: str) -> tuple[int, int]:
        """(steps the checkpoint reached, steps this trainer's schedule plans); equal when the run there is complete."""
        state = TrainerState.load_from_json(os.path.join(checkpoint, "trainer_state.json"))
        return state.global_step, planned_optimizer_steps(self.train_mixture, self.args)

    def train(self, resume_from_checkpoint: str | bool | None = None, trial=None, ignore_keys_for_eval=None, **kwargs):
        resume_from_checkpoint = self.resolve_checkpoint(resume_from_checkpoint)
        if resume_from_checkpoint:
            state = load_multitask_state(resume_from_checkpoint)  # first: it says what is wrong with the folder
            reached, planned = self.completed_steps(resume_from_checkpoint)
            if reached >= planned:
                return self._restore_complete_run(resume_from_checkpoint)
            if state["weighting_name"] != self.weighting.name:
                raise ValueError(
                    f"the checkpoint was trained with weighting {state['weighting_name']!r}, "
                    f"this trainer uses {self.weighting.name!r}: resume with weighting {state['weighting_name']!r}, "
                    "or start a fresh run in another output_dir"
                )
            self.weighting.load_state_dict(state["weighting"])
            self._pending_mixture_state = state["mixture"]
        output = super().train(
            resume_from_checkpoint=resume_from_checkpoint,
            trial=trial,
            ignore_keys_for_eval=ignore_keys_for_eval,
            **kwargs,
        )
        if self.bad_images is not None:
            output.metrics.update(self.bad_images.check())  # into all_results.json with the other train metrics
        return output

    # -- evaluation ------------------------------------------------------------------------------

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        output = self._predict_sources(_named_sources(eval_dataset) if eval_dataset is not None else self.eval_sources,
                                       metric_key_prefix)  # fmt: skip
        self.log(output.metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, output.metrics)
        return output.metrics

    def predict(self, test_dataset, ignore_keys=None, metric_key_prefix: str = "test") -> PredictionOutput:
        """Per-task logits and targets (dicts task -> array) and metrics of every task in `test_dataset`."""
        output = self._predict_sources(_named_sources(test_dataset), metric_key_prefix)
        self.control = self.callback_handler.on_predict(self.args, self.state, self.control, output.metrics)
        return output

    @torch.no_grad()
    def _predict_sources(self, sources: dict[str, TaskSource], prefix: str) -> PredictionOutput:
        if not sources:
            raise ValueError("nothing to evaluate: pass eval_dataset (task sources) to the trainer or to evaluate()")
        started = time.time()
        model = self.model_wrapped if self.model_wrapped is not None else self.model
        model.eval()
        collator = MultiTaskCollator(list(self.task_specs.values()), self.image_transforms.eval())
        logits, labels, loss_sums, counts = defaultdict(list), defaultdict(list), defaultdict(float), defaultdict(int)
        skipping = [source.name for source in sources.values() if source.bad_image_policy == "skip"]
        bad_images = BadImageTally(skipping, max_fraction=1.0, device=self.args.device) if skipping else None
        rows_seen = 0
        for source in sources.values():
            for name in source.task_names:
                if name not in self.task_specs:
                    raise ValueError(f"eval source {source.name!r} has task {name!r} that the model lacks")
            batch_size = self.args.per_device_eval_batch_size
            total = None if source.num_rows is None else math.ceil(source.num_rows / self.args.world_size / batch_size)
            progress = tqdm(total=total, desc=f"{prefix}: {source.name}", unit="batch", leave=False,
                            disable=self.args.disable_tqdm or not self.is_local_process_zero())  # fmt: skip
            for batch in _eval_batches(source, batch_size, self.args):
                progress.update()
                # A batch of one source: targets and heads for its tasks only.
                inputs = self._prepare_inputs(collator(MixtureBatch(batch, tuple(source.task_names))))
                image_counts = inputs.pop("image_counts", None)  # rows left out (bad_image_policy: skip)
                if bad_images is not None:
                    bad_images.add(image_counts)
                with self.compute_loss_context_manager():
                    outputs = model(**inputs)
                kept = inputs["pixel_values"].shape[0]
                rows_seen += kept
                for name in source.task_names:
                    logits[name].append(outputs.logits[name].float().cpu().numpy())
                    labels[name].append(inputs["labels"][name].cpu().numpy())
                    loss_sums[name] += float(outputs.task_losses[name]) * kept
                    counts[name] += kept
            progress.close()
        logits, labels = _gather(logits), _gather(labels)
        loss_sums, counts = _gather_sums(loss_sums), _gather_sums(counts)
        rows_seen = int(sum(_gather_sums({"rows": rows_seen}).values()))

        metrics, primaries = {}, []
        for name, values in logits.items():
            spec = self.task_specs[name]
            scores = self.task_metrics(spec, values, labels[name])
            metrics.update({f"{prefix}_{name}_{key}": value for key, value in scores.items() if key != "count"})
            metrics[f"{prefix}_{name}_loss"] = loss_sums[name] / max(counts[name], 1)
            primaries.append(scores[PRIMARY_METRIC[spec.type]])
        metrics[f"{prefix}_loss"] = float(np.mean([metrics[f"{prefix}_{n}_loss"] for n in logits]))
        metrics[f"{prefix}_average_score"] = float(np.nanmean(primaries))
        if bad_images is not None:  # counted, not limited: evaluation reports what the data holds
            metrics.update({f"{prefix}_{key}": count for key, count in bad_images.check().items()})
        metrics.update(speed_metrics(prefix, started, num_samples=rows_seen))
        return PredictionOutput(predictions=dict(logits), label_ids=dict(labels), metrics=metrics)

    def task_metrics(self, spec: TaskSpec, logits: np.ndarray, targets: np.ndarray) -> dict[str, float]:
        """One task's metrics from its logits and targets (missing targets skipped), as evaluate() reports them."""
        metric = load_task_metric(spec.type)
        if spec.type == "classification":
            return metric.compute(predictions=logits.argmax(-1), references=targets, num_labels=spec.num_outputs)
        if spec.type == "multilabel":
            probabilities = 1.0 / (1.0 + np.exp(-logits))
            return metric.compute(
                predictions=probabilities, references=targets, threshold=self.args.multilabel_threshold
            )
        return metric.compute(predictions=logits, references=targets)


class _WeightingCallback(TrainerCallback):
    """Calls the weighting's hooks at the right moments of Trainer's loop."""

    def __init__(self, trainer: MultiTaskTrainer):
        self.trainer = trainer

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self.trainer._step_skipped = not self.trainer.loss_guard.step_may_run(state.global_step + 1)
        if self.trainer._step_skipped:
            self.trainer._drop_gradients()
        self.trainer._sync_weighting_gradients()

    def on_optimizer_step(self, args, state, control, **kwargs):
        # Trainer zeroes the model's gradients only; learned weights (UW) must not accumulate.
        self.trainer.weighting.zero_grad(set_to_none=True)

    def on_step_end(self, args, state, control, **kwargs):
        if self.trainer._step_skipped:
            self.trainer._step_replay.forget()
            self.trainer.weighting.skip_step()
        else:
            self.trainer._end_weighting_step()

    def on_epoch_end(self, args, state, control, **kwargs):
        self.trainer.weighting.end_epoch()


def _named_sources(data) -> dict[str, TaskSource]:
    if data is None:
        return {}
    if isinstance(data, TaskSource):
        return {data.name: data}
    if isinstance(data, Mapping):
        return dict(data)
    if isinstance(data, Sequence) and all(isinstance(s, TaskSource) for s in data):
        return {source.name: source for source in data}
    raise TypeError(f"evaluation data must be TaskSource(s) or a dict of them, got {type(data).__name__}")


def _eval_batches(source: TaskSource, batch_size: int, args) -> Any:
    """This rank's rows of `source`, in order, every row once, in batches (the last may be short)."""
    rank, world = args.process_index, args.world_size
    if source.is_streaming:
        rows = source.stream(seed=0, rank=rank, world_size=world, shuffle=False, buffer_size=1)
        batch = []
        for index, row in enumerate(rows):
            batch.append(source.example(row, index))
            if len(batch) == batch_size:
                yield batch
                batch = []
        if batch:
            yield batch
        return
    indices = list(range(rank, source.num_rows, world))
    for start in range(0, len(indices), batch_size):
        yield source.rows(indices[start : start + batch_size])


def _gather(parts: dict[str, list[np.ndarray]]) -> dict[str, np.ndarray]:
    local = {name: np.concatenate(values) for name, values in parts.items()}
    if not is_distributed():
        return local
    everyone = [None] * world_size()
    torch.distributed.all_gather_object(everyone, local)
    names = sorted({name for part in everyone for name in part})
    return {name: np.concatenate([part[name] for part in everyone if name in part]) for name in names}


def _gather_sums(values: dict[str, float]) -> dict[str, float]:
    if not is_distributed():
        return dict(values)
    everyone = [None] * world_size()
    torch.distributed.all_gather_object(everyone, dict(values))
    totals: dict[str, float] = defaultdict(float)
    for part in everyone:
        for name, value in part.items():
            totals[name] += value
    return dict(totals)


def _read_json(path: str) -> dict | None:
    if not os.path.isfile(path):
        return None
    with open(path) as file:
        return json.load(file)


__all__ = ["MultiTaskTrainer"]
