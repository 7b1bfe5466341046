"""`MultiTaskTrainer`: the stock `Trainer`, fed by a `TaskMixture`, balancing the tasks.

The trainer orchestrates; each part lives in a module of its own:
- the training mixture and the balancing method come from the arguments (`plan`); the mixture's
  position is saved in every checkpoint (`checkpoint_state`, `callbacks`) and restored on resume,
  so a resumed run sees exactly the batches an uninterrupted one would (Trainer's own batch
  skipping is off);
- `compute_loss` turns the model's per-task losses (`balancing.step_losses`: present tasks,
  DDP-consistent rescaling) into one loss with a balancing method (`weighting`); gradient methods take
  the gradient path (`balancing.gradient_path`): in representation space inside `compute_loss`, so
  Trainer's own backward does the rest, in parameter space through `training_step`;
- the loss guard (`loss_guard`) finds a non-finite task loss before the optimizer step; the
  weighting's hooks run around the step (`callbacks`), with the step's batches replayed after it for
  methods that learn from its effect (`step_replay`);
- with a teacher (the model's earlier self), its answers add a distillation term after the weighting
  (`distillation`); the logs carry `loss_<task>`, `weight_<task>`, `loss_distill` and skipped photos (`tallies`);
- `evaluate` / `predict` score every task on its own evaluation rows (`evaluation`);
- every save writes the model card and training curves beside the model (`model_card`)."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from transformers import Trainer, TrainerState
from transformers.trainer_utils import PredictionOutput, TrainOutput

from ..balancing import WeightingMethod
from ..balancing.gradient_path import FeatureTap, parameter_space_backward, representation_loss
from ..balancing.step_losses import StepLosses, step_losses
from ..data.collator import MultiTaskCollator
from ..data.loader import MultiTaskDataLoader
from ..data.mixture import TaskMixture
from ..data.sources import TaskSource
from ..data.transforms import ImageTransforms
from ..errors import UserError
from ..models.mtl_vit.modeling_mtl_vit import MultiTaskViTModel
from ..utils.collectives import destroy_process_group_at_exit
from .arguments import MultiTaskTrainingArguments
from .assembly import (
    planned_optimizer_steps,
    prepare_model,
    record_training_data,
    refuse_ignored_arguments,
    training_mixture,
    training_weighting,
)
from .callbacks import MultiTaskStateCallback, WeightingCallback
from .checkpoint_state import last_complete_checkpoint, load_multitask_state, restore_task_losses
from .distillation import distillation_of
from .evaluation import named_sources, predict_sources
from .loss_guard import LossGuard
from .model_card import write_model_card
from .parameter_groups import BackboneFreezing, check_unfreeze_step, grouped_optimizer
from .step_replay import StepReplay
from .tallies import BadImageTally, TaskLogs

logger = logging.getLogger(__name__)


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
        compute_task_metrics (`Callable[[str, np.ndarray, np.ndarray], dict[str, float]]`, *optional*): metrics
            of your own, per task, beside each task type's: called with the task's name, its logits and its
            targets (the evaluated rows that have one); each returned `name: value` is reported as
            `eval_<task>_<name>` and can be `metric_for_best_model`.
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
        compute_task_metrics: Callable[[str, np.ndarray, np.ndarray], Mapping[str, float]] | None = None,
        teacher: MultiTaskViTModel | None = None,
        **kwargs,
    ):
        if not isinstance(args, MultiTaskTrainingArguments):
            raise TypeError(f"args must be MultiTaskTrainingArguments, got {type(args).__name__}")
        if not isinstance(model, MultiTaskViTModel):
            raise TypeError(
                f"model must be a MultiTaskViTModel, got {type(model).__name__}; for LoRA, set lora_rank (or call "
                "model.add_lora) rather than wrapping the model with peft"
            )
        if kwargs.get("data_collator") is not None:
            raise UserError("the collator follows from the tasks and transforms; pass image_transforms instead")
        refuse_ignored_arguments(args, kwargs)
        if compute_task_metrics is not None and not callable(compute_task_metrics):
            raise UserError(
                f"compute_task_metrics must be a function (task, logits, targets) -> dict, got {compute_task_metrics!r}"
            )
        self.compute_task_metrics = compute_task_metrics
        self.image_transforms = image_transforms or ImageTransforms.for_training(processing_class, model.image_size)
        self.task_specs = {spec.name: spec for spec in model.config.task_specs}
        self.train_mixture = (
            training_mixture(train_dataset, args, self.task_specs) if train_dataset is not None else None
        )
        prepare_model(model, args, self.train_mixture)
        self.task_specs = {spec.name: spec for spec in model.config.task_specs}  # with what the data settled
        self.eval_sources = named_sources(eval_dataset)
        if args.ignore_data_skip is False:
            # The mixture restores its own position from the checkpoint; Trainer must not also
            # fast-forward (and decode) the batches already seen.
            args.ignore_data_skip = True
        super().__init__(
            model=model,
            args=args,
            train_dataset=self.train_mixture,
            eval_dataset=self.eval_sources or None,  # read only by our evaluate()
            processing_class=processing_class or self.image_transforms.image_processor(),
            **kwargs,
        )
        destroy_process_group_at_exit()  # of a process group, where there is one
        self.weighting = training_weighting(
            weighting,
            args,
            self.task_specs,
            self.train_mixture,
            sharded=self.is_deepspeed_enabled or self.is_fsdp_enabled,
        )
        self.task_logs = TaskLogs(list(self.task_specs))
        self.loss_guard = LossGuard(args.nan_policy, list(self.task_specs))
        self.step_replay = StepReplay()
        self.add_callback(WeightingCallback(self.weighting, self.loss_guard, self.step_replay, self._replayed_losses))
        self.add_callback(MultiTaskStateCallback(self.multitask_state))
        self.freezing = (
            BackboneFreezing(model.backbone, args.unfreeze_backbone_at_step) if args.freeze_backbone else None
        )
        if self.freezing is not None:
            self.add_callback(self.freezing)
        self.distillation = distillation_of(teacher, model, args, self.weighting)
        train_sources = self.train_mixture.sources if self.train_mixture is not None else []
        skipping = {source.name: source.num_rows for source in train_sources if source.bad_image_policy == "skip"}
        self.bad_images = BadImageTally(skipping, args.max_bad_image_fraction, device=args.device) if skipping else None
        representation = self.weighting.uses_gradients and args.gradient_space == "representation"
        self._features = FeatureTap(model.backbone) if representation else None
        self._pending_mixture_state: dict | None = None
        self._train_loader: MultiTaskDataLoader | None = None

    # -- training data -----------------------------------------------------------------------

    def get_train_dataloader(self) -> MultiTaskDataLoader:
        if self.train_mixture is None:
            raise UserError("MultiTaskTrainer: training needs a train_dataset (task sources or a TaskMixture)")
        workers = self.args.dataloader_num_workers
        loader = self.train_mixture.dataloader(
            MultiTaskCollator(self.train_mixture.task_specs, self.image_transforms, with_rows=True, uint8_pixels=True),
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

    def _prepare_inputs(self, inputs):
        # Private, overridden: where every batch reaches the device. Workers send uint8 pixels (a quarter of float32's
        # bytes), normalised here, on the device (tests/test_trainer.py: the uint8 batch, the same losses).
        inputs = super()._prepare_inputs(inputs)
        if torch.is_tensor(inputs.get("pixel_values")):
            inputs["pixel_values"] = self.image_transforms.normalize(inputs["pixel_values"])
        return inputs

    def num_examples(self, dataloader) -> int:
        if isinstance(dataloader, MultiTaskDataLoader):
            return len(dataloader) * dataloader.mixture.batch_size
        return super().num_examples(dataloader)

    # -- losses ------------------------------------------------------------------------------

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        training = model.training and torch.is_grad_enabled()
        rows = self._take_reports(inputs)
        if training and self.weighting.needs_losses_after_step:
            self.step_replay.record(inputs, inputs["pixel_values"].device)
        distilling = training and self.distillation is not None
        if distilling:
            inputs = self.distillation.with_distilled_heads(inputs)
        outputs = model(**inputs)
        losses = step_losses(self.task_specs, outputs, inputs["labels"], self.model.task_loss_denominator)
        if training:
            self.loss_guard.watch(losses, rows)
        if self._features is not None and training and self._backbone_trains:
            loss, weights = representation_loss(self.weighting, losses, self._features.take())
        elif self.weighting.uses_gradients:  # outside training, or a frozen backbone: the prior-weighted sum
            weights = self.weighting.prior_weights(losses.present)
            loss = (weights * losses.local).sum()
        else:
            weights = self.weighting.task_weights(losses.mean, losses.present)
            loss = self.weighting.combine(losses.local, weights, losses.present)
        if training:
            self._observe(losses, weights)
        if distilling:  # after the weighting: a regulariser beside the tasks, not a task to balance
            loss = loss + self.task_logs.add_distillation(self.distillation.loss(self.model, inputs, outputs))
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

    @property
    def _backbone_trains(self) -> bool:
        """Whether the backbone takes gradients at this step: a gradient method has shared parameters to act on."""
        return self.freezing is None or not self.freezing.frozen

    def training_step(self, model, inputs, num_items_in_batch=None):
        gradient_path = self.weighting.uses_gradients and self.args.gradient_space == "parameters"
        if not (gradient_path and self._backbone_trains):
            return super().training_step(model, inputs, num_items_in_batch)
        model.train()
        inputs = self._prepare_inputs(inputs)
        rows = self._take_reports(inputs)
        # DDP must not average these gradients: the gradient path reduces them itself, per task.
        with self.accelerator.no_sync(model), self.compute_loss_context_manager():
            outputs = model(**inputs)
        losses = step_losses(self.task_specs, outputs, inputs["labels"], self.model.task_loss_denominator)
        self.loss_guard.watch(losses, rows)
        unwrapped = self.accelerator.unwrap_model(model)
        scale = 1.0 / self.current_gradient_accumulation_steps
        weights = parameter_space_backward(
            self.weighting,
            losses,
            shared=[p for p in unwrapped.backbone.parameters() if p.requires_grad],
            heads=[p for p in unwrapped.heads.parameters() if p.requires_grad],
            scale=scale,
        )
        self._observe(losses, weights)
        return (self.weighting.prior_weights(losses.present) * losses.local).sum().detach() * scale

    def _replayed_losses(self, inputs: dict) -> StepLosses:
        """A recorded micro-batch's task losses after the optimizer step, computed as its training forward was."""
        with self.compute_loss_context_manager():
            outputs = self.model_wrapped(**inputs)
        return step_losses(self.task_specs, outputs, inputs["labels"], self.model.task_loss_denominator)

    def create_optimizer(self, model=None):
        if self.optimizer is None and self.args.fine_tuning.shapes_groups:
            self.optimizer = grouped_optimizer(self, self.model if model is None else model)
        optimizer = super().create_optimizer(model)
        # Trainer keeps its optimizer across train() calls: the weighting's group is added once.
        held = {id(p) for group in optimizer.param_groups for p in group["params"]}
        learned = [p for p in self.weighting.parameters() if p.requires_grad and id(p) not in held]
        if learned:
            optimizer.add_param_group({"params": learned, "weight_decay": 0.0})
        return optimizer

    # -- logs and saving ---------------------------------------------------------------------------

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:
            logs.update(self.task_logs.flush())
            if self.loss_guard.skipped_steps:
                logs["skipped_steps"] = self.loss_guard.skipped_steps
            if self.bad_images is not None:
                logs.update(self.bad_images.check())
        super().log(logs, start_time)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Saves the model and image processor, plus the per-task curves PNG and the model card beside them.

        Checkpoints (`_internal_call`) keep the parameters' live names, which Trainer's loaders read as they are
        (saved models: transformers' original names, `save_in_original_format`), and get the card and curves only
        when pushed: drawing them took longer than a small model's steps."""
        model = self.accelerator.unwrap_model(self.model)
        model.save_in_original_format = not _internal_call
        try:
            super().save_model(output_dir, _internal_call)
        finally:
            model.save_in_original_format = True
        if self.args.should_save and (self.args.pushes_checkpoints or not _internal_call):
            write_model_card(self, output_dir or self.args.output_dir)

    def create_model_card(self, model_name: str | None = None, dataset=None, license: str | None = None, **kwargs):
        """Writes the multi-task model card to `output_dir/README.md` (Trainer's `push_to_hub` calls this)."""
        if self.is_world_process_zero():
            write_model_card(self, self.args.output_dir, model_name=model_name, datasets=dataset, license=license)

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

    def completed_steps(self, checkpoint: str) -> tuple[int, int]:
        """(steps the checkpoint reached, steps this trainer's schedule plans); equal when the run there is complete."""
        state = TrainerState.load_from_json(os.path.join(checkpoint, "trainer_state.json"))
        return state.global_step, planned_optimizer_steps(self.train_mixture, self.args)

    def train(self, resume_from_checkpoint: str | bool | None = None, trial=None, ignore_keys_for_eval=None, **kwargs):
        resume_from_checkpoint = self.resolve_checkpoint(resume_from_checkpoint)
        if resume_from_checkpoint:
            state = load_multitask_state(resume_from_checkpoint)  # first: it says what is wrong with the folder
            model = self.accelerator.unwrap_model(self.model)
            # The run's own units and loss weights, whatever the data says now.
            restore_task_losses(model, resume_from_checkpoint)
            self.task_specs = {spec.name: spec for spec in model.config.task_specs}
            reached, planned = self.completed_steps(resume_from_checkpoint)
            if reached >= planned:
                return self._restore_complete_run(resume_from_checkpoint)
            if state["weighting_name"] != self.weighting.name:
                raise UserError(
                    f"the checkpoint was trained with weighting {state['weighting_name']!r}, "
                    f"this trainer uses {self.weighting.name!r}: resume with weighting {state['weighting_name']!r}, "
                    "or start a fresh run in another output_dir"
                )
            self.weighting.load_state_dict(state["weighting"])
            self._pending_mixture_state = state["mixture"]
        if self.train_mixture is not None:
            record_training_data(self.accelerator.unwrap_model(self.model), self.train_mixture)
            check_unfreeze_step(
                self.args.unfreeze_backbone_at_step, planned_optimizer_steps(self.train_mixture, self.args)
            )
        output = super().train(
            resume_from_checkpoint=resume_from_checkpoint,
            trial=trial,
            ignore_keys_for_eval=ignore_keys_for_eval,
            **kwargs,
        )
        if self.bad_images is not None:
            output.metrics.update(self.bad_images.check())  # into all_results.json with the other train metrics
        return output

    def _restore_complete_run(self, checkpoint: str) -> TrainOutput:
        # Trainer would take one more step past the end (and save it); a finished run needs its weights and state.
        logger.warning(
            "%s is the end of the planned schedule: nothing to train. Raise max_steps or "
            "num_train_epochs to train further.",
            checkpoint,
        )
        self._load_from_checkpoint(checkpoint)
        self.state = TrainerState.load_from_json(os.path.join(checkpoint, "trainer_state.json"))
        losses = [entry["train_loss"] for entry in self.state.log_history if "train_loss" in entry]
        return TrainOutput(self.state.global_step, losses[-1] if losses else math.nan, {})

    # -- evaluation ------------------------------------------------------------------------------

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        sources = named_sources(eval_dataset) if eval_dataset is not None else self.eval_sources
        output = predict_sources(self, sources, metric_key_prefix)
        self.log(output.metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, output.metrics)
        return output.metrics

    def predict(self, test_dataset, ignore_keys=None, metric_key_prefix: str = "test") -> PredictionOutput:
        """Per-task logits and targets (dicts task -> array) and metrics of every task in `test_dataset`."""
        output = predict_sources(self, named_sources(test_dataset), metric_key_prefix)
        self.control = self.callback_handler.on_predict(self.args, self.state, self.control, output.metrics)
        return output


__all__ = ["MultiTaskTrainer"]
