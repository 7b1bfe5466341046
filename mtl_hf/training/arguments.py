"""`MultiTaskTrainingArguments`: `TrainingArguments` plus task sampling, loss balancing and evaluation."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Any

from transformers import TrainingArguments
from transformers.trainer_utils import HubStrategy

from ..balancing import WEIGHTING_METHODS, check_weighting_options
from ..balancing.gradient_path import GRADIENT_SPACES
from ..data.loader import default_num_workers
from ..data.mixture import BATCH_MODES, STRATEGIES, WHEN_EXHAUSTED
from ..errors import UserError, missing_extra
from ..utils.validation import check_choice, comma_separated, structured_option
from .loss_guard import NAN_POLICIES
from .parameter_groups import FineTuning


@dataclass
class MultiTaskTrainingArguments(TrainingArguments):
    r"""
    Everything `TrainingArguments` takes, plus the multi-task settings below. Vision inputs keep
    their image columns (`remove_unused_columns` defaults to `False`).
    """

    # -- sampling: how the training batches mix the task sources ------------------------------
    sampling_strategy: str = field(
        default="proportional",
        metadata={"help": f"How often each task source is drawn: {', '.join(STRATEGIES)}."},
    )
    sampling_temperature: float = field(
        default=2.0, metadata={"help": "Temperature T of the 'temperature' strategy (p ~ size ** (1/T))."}
    )
    sampling_weights: dict[str, float] | str | None = field(
        default=None,
        metadata={"help": "Source name -> weight, for the 'weights' strategy (a dict, or JSON on the command line)."},
    )
    batch_mode: str = field(
        default="homogeneous",
        metadata={"help": "'homogeneous': one source per batch (only its heads run); 'mixed': rows drawn one by one."},
    )
    when_exhausted: str = field(
        default="recycle",
        metadata={
            "help": "A source that runs out: 'recycle' (new shuffled pass) or 'stop' (ends the epoch; each epoch "
            "then draws the sources in exact proportion, so every epoch has the same steps)."
        },
    )
    steps_per_epoch: int | None = field(
        default=None, metadata={"help": "Batches per epoch (default: one pass's worth of rows)."}
    )
    shuffle_buffer_size: int = field(default=1000, metadata={"help": "Shuffle buffer of streaming sources, in rows."})

    # -- balancing: how the task losses become one loss ----------------------------------------
    weighting: str = field(
        default="static",
        metadata={
            "help": f"Balancing method: {', '.join(WEIGHTING_METHODS)}. Every method's weight for a task is "
            "multiplied by the task's loss_weight; 'static' (and 'equal') use loss_weight alone."
        },
    )
    weighting_options: dict[str, Any] | str | None = field(
        default=None,
        metadata={"help": 'Options of the weighting method (a dict, or JSON), e.g. {"temperature": 2.0} for dwa.'},
    )
    gradient_space: str = field(
        default="parameters",
        metadata={
            "help": "Where gradient methods take the per-task gradients: 'parameters' (of every backbone parameter, "
            "as the papers do; one backward per task) or 'representation' (of the features the heads read; about "
            "one backward per step, but task gradients conflict less there, see the README)."
        },
    )

    nan_policy: str = field(
        default="stop",
        metadata={
            "help": "A NaN or inf task loss: 'stop' (raise before the optimizer step, naming the task, the step "
            "and the batch's rows) or 'skip_step' (drop that step's update, log it, go on)."
        },
    )

    max_bad_image_fraction: float = field(
        default=0.01,
        metadata={
            "help": "Under bad_image_policy 'skip': the largest share of a source's images that may fail "
            "to decode before the run stops (checked at every logging step and at the end)."
        },
    )

    # -- fine-tuning: what trains, at what rate --------------------------------------------------
    freeze_backbone: bool = field(
        default=False,
        metadata={
            "help": "Train the heads alone on a frozen backbone (linear probing); see unfreeze_backbone_at_step."
        },
    )
    unfreeze_backbone_at_step: int | None = field(
        default=None,
        metadata={
            "help": "With freeze_backbone: the optimizer steps that train the heads alone, after which the backbone "
            "trains too (LP-FT: linear probing, then fine-tuning)."
        },
    )
    head_learning_rate: float | None = field(
        default=None, metadata={"help": "The heads' learning rate (default: learning_rate, as the backbone's)."}
    )
    layer_decay: float | None = field(
        default=None,
        metadata={
            "help": "Layer-wise learning-rate decay in (0, 1]: backbone block i of L (from 0) trains at learning_rate "
            "* layer_decay ** (L - i), the embeddings at layer_decay ** (L + 1) (e.g. 0.65-0.75 for ViT-Base)."
        },
    )

    frozen_tasks: list[str] | str | None = field(
        default=None,
        metadata={
            "help": "Heads that do not train (a list, or comma-separated): with freeze_backbone their answers stay "
            "exactly as they were, e.g. the old tasks of a model that new tasks are added to."
        },
    )
    distill_weight: float = field(
        default=1.0,
        metadata={
            "help": "With a teacher (a model's earlier self, MultiTaskTrainer(teacher=...)): the weight of its "
            "answers on each training photo as soft targets for its own heads (Learning without Forgetting)."
        },
    )
    distill_temperature: float = field(
        default=2.0,
        metadata={
            "help": "The temperature that softens the teacher's and the model's class scores before they are "
            "compared (classification and multilabel heads); the loss is scaled by its square."
        },
    )

    lora_rank: int | None = field(
        default=None,
        metadata={
            "help": "Train LoRA adapters of this rank in the backbone (its own weights frozen) and the heads in full; "
            "needs peft (pip install 'mtl_hf[peft]')."
        },
    )
    lora_alpha: float | None = field(
        default=None,
        metadata={
            "help": "LoRA scaling numerator: the adapters' output is scaled by alpha / rank (default: alpha = rank)."
        },
    )
    lora_dropout: float = field(default=0.0, metadata={"help": "Dropout on the LoRA adapters' input."})
    lora_target_modules: list[str] | str | None = field(
        default=None,
        metadata={
            "help": "The backbone's linear layers that get adapters, by name (a list, or comma-separated); default: "
            "the attention's query and value projections (q_proj, v_proj; query, value; timm's qkv), or ConvNeXt's "
            "pwconv1, pwconv2."
        },
    )

    # -- evaluation ------------------------------------------------------------------------------
    multilabel_threshold: float = field(
        default=0.5, metadata={"help": "Probability above which a multilabel label counts as predicted."}
    )

    # -- the output folder ------------------------------------------------------------------------
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Let a recipe train into an output_dir that holds a previous run (its checkpoints are "
            "deleted first). Without it the recipe stops and says how to resume instead."
        },
    )

    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Kept False: the task data carries images, not model-signature columns."}
    )

    dataloader_num_workers: int = field(
        default=-1,
        metadata={
            "help": "DataLoader worker processes that decode and augment images; -1 (default): "
            "default_num_workers(), enough to feed one accelerator and none when training on the CPU."
        },
    )

    def __post_init__(self):
        if self.greater_is_better is None and self.metric_for_best_model is not None:
            # Trainer takes every metric but a loss as higher-is-better, which would keep the checkpoint with the
            # worst `size_mse`; the task metrics that fall as they improve are named here.
            metric = self.metric_for_best_model.removeprefix("eval_")
            self.greater_is_better = not metric.endswith(("loss", "_mse", "_mae", "_rmse"))
        super().__post_init__()
        if self.dataloader_num_workers == -1:
            self.dataloader_num_workers = default_num_workers(use_cpu=self.use_cpu)
        elif self.dataloader_num_workers < 0:
            raise UserError(
                f"dataloader_num_workers must be >= 0 (or -1 for the default), got {self.dataloader_num_workers}"
            )
        self.sampling_weights = structured_option("sampling_weights", self.sampling_weights)
        self.weighting_options = structured_option("weighting_options", self.weighting_options) or {}
        for name, value, choices in [
            ("sampling_strategy", self.sampling_strategy, STRATEGIES),
            ("batch_mode", self.batch_mode, BATCH_MODES),
            ("when_exhausted", self.when_exhausted, WHEN_EXHAUSTED),
            ("weighting", self.weighting, tuple(WEIGHTING_METHODS)),
            ("gradient_space", self.gradient_space, GRADIENT_SPACES),
            ("nan_policy", self.nan_policy, NAN_POLICIES),
        ]:
            check_choice(name, value, choices)
        check_weighting_options(self.weighting, self.weighting_options)
        if not 0.0 <= self.max_bad_image_fraction <= 1.0:
            raise UserError(f"max_bad_image_fraction must be in [0, 1], got {self.max_bad_image_fraction}")
        if "tensorboard" in (self.report_to or []) and not any(
            importlib.util.find_spec(module) for module in ("tensorboard", "tensorboardX")
        ):
            raise missing_extra("report_to: tensorboard", "tensorboard", "tensorboard")
        self._check_fine_tuning()
        self._check_checkpointing()
        if not 0.0 < self.multilabel_threshold < 1.0:
            raise UserError(f"multilabel_threshold must be in (0, 1), got {self.multilabel_threshold}")

    def _check_fine_tuning(self) -> None:
        step = self.unfreeze_backbone_at_step
        if step is not None:
            if not self.freeze_backbone:
                raise UserError(
                    f"unfreeze_backbone_at_step {step} needs freeze_backbone: set it too (LP-FT), or drop the step"
                )
            if isinstance(step, bool) or not isinstance(step, int) or step < 1:
                raise UserError(f"unfreeze_backbone_at_step must be a whole number of steps >= 1, got {step!r}")
        if self.head_learning_rate is not None and not self.head_learning_rate > 0:
            raise UserError(f"head_learning_rate must be > 0, got {self.head_learning_rate}")
        if self.layer_decay is not None and not 0.0 < self.layer_decay <= 1.0:
            raise UserError(f"layer_decay must be in (0, 1], got {self.layer_decay}")
        if isinstance(self.frozen_tasks, str):
            self.frozen_tasks = comma_separated(self.frozen_tasks)
        if not self.distill_weight >= 0:
            raise UserError(f"distill_weight must be >= 0, got {self.distill_weight}")
        if not self.distill_temperature > 0:
            raise UserError(f"distill_temperature must be > 0, got {self.distill_temperature}")
        if isinstance(self.lora_target_modules, str):
            self.lora_target_modules = comma_separated(self.lora_target_modules)
        if self.lora_rank is not None:
            if self.freeze_backbone:
                raise UserError(
                    "freeze_backbone with lora_rank: LoRA already keeps the backbone's own weights frozen and trains "
                    "only its adapters; drop freeze_backbone (or lora_rank, to train the heads alone)"
                )
            if importlib.util.find_spec("peft") is None:
                raise missing_extra("lora_rank", "peft", "peft")
            if self.push_to_hub:
                raise UserError(
                    "push_to_hub with lora_rank would upload the adapters, which load only where peft and mtl_hf are "
                    "installed; after training run mtl-hf merge OUTPUT_DIR MERGED, then mtl-hf push MERGED REPO_ID"
                )
        if self.layer_decay is not None and self.freeze_backbone and step is None:
            raise UserError("layer_decay sets the rates of a backbone that freeze_backbone never trains; drop one")

    def _check_checkpointing(self) -> None:
        if not self.activation_checkpointing:
            return
        options = self.activation_checkpointing_kwargs or {}
        if isinstance(options, dict) and options.get("use_reentrant"):
            raise UserError(
                "activation_checkpointing_kwargs use_reentrant=True: MultiTaskTrainer needs non-reentrant "
                "checkpointing (gradient methods differentiate each task's loss through the backbone, which reentrant "
                "checkpointing refuses); leave use_reentrant unset"
            )
        if self.ddp_find_unused_parameters is None:
            # Trainer turns DDP's search for unused parameters off under checkpointing, but a homogeneous batch
            # leaves the other sources' heads unused (and a frozen backbone its weights): DDP would stop at the
            # next step. Non-reentrant checkpointing works with the search on.
            self.ddp_find_unused_parameters = True

    @property
    def fine_tuning(self) -> FineTuning:
        """The learning-rate settings that shape the optimizer's parameter groups."""
        return FineTuning(
            self.learning_rate,
            self.weight_decay,
            self.head_learning_rate,
            self.layer_decay,
            self.unfreeze_backbone_at_step,
        )

    @property
    def pushes_checkpoints(self) -> bool:
        """Whether Trainer pushes checkpoints while training (`hub_strategy` other than `end`)."""
        return bool(self.push_to_hub) and self.hub_strategy != HubStrategy.END


__all__ = ["MultiTaskTrainingArguments"]
