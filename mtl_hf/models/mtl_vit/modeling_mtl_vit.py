"""The multi-task vision transformer: one shared backbone, one small head per task.

One backbone pass serves every head (a second the heads on a task adapter's path: `adapters_mtl_vit.py`), so K
tasks cost about one model. Targets arrive as a dict `{task_name: tensor}`; any task may be absent, and any target
inside a task may be missing (heads, targets' conventions and losses: `heads_mtl_vit.py`; the backbone, its
pooling and LoRA: `backbone_mtl_vit.py`). Like the configuration file, this file imports nothing from `mtl_hf`
but its siblings, so it can travel with a saved model as remote code.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput
from transformers.utils.generic import can_return_tuple

from .adapters_mtl_vit import LowRankUpdate, TaskPathAdapter
from .backbone_mtl_vit import (
    as_token_sequence,
    backbone_from_config,
    check_pooling,
    default_lora_targets,
    default_pooling,
    feature_size,
    image_size,
    inject_lora,
    merge_lora_layers,
    pool,
    takes_pooling_flag,
    with_pooling,
)
from .configuration_mtl_vit import MultiTaskViTConfig, TaskSpec, checked_lora, checked_task_adapter
from .heads_mtl_vit import MultiTaskHead, loss_denominator, task_loss
from .saving_mtl_vit import (
    PROCESSOR_FILE,
    processor_folder,
    read_training_rows,
    refuse_pickled_weights,
    remote_pipeline,
    write_endpoint_files,
    write_training_rows,
)
from .tasks_mtl_vit import balanced_weights, tasks_to_run

_HUB_KWARGS = ("revision", "cache_dir", "token", "local_files_only", "trust_remote_code")


@dataclass
class MultiTaskOutput(ModelOutput):
    r"""
    Output of [`MultiTaskViTModel`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `labels` is given):
            Sum over the tasks in `labels` of `loss_weight * task_loss`.
        task_losses (`dict[str, torch.FloatTensor]`, *optional*, returned when `labels` is given):
            Unweighted loss of each task in `labels`: the mean over its present targets (0 when all
            are missing). Loss-balancing methods combine these.
        logits (`dict[str, torch.FloatTensor]`):
            Raw head outputs per task that ran, shape `(batch_size, num_outputs)`: class scores
            before softmax (classification), before sigmoid (multilabel), or the predicted values
            (regression).
        hidden_states (`tuple(torch.FloatTensor)`, *optional*, returned when `output_hidden_states=True`):
            The backbone's hidden states (embeddings, then each layer).
        attentions (`tuple(torch.FloatTensor)`, *optional*, returned when `output_attentions=True`):
            The backbone's attention weights, one tensor per layer (needs eager attention).
    """

    loss: torch.FloatTensor | None = None
    task_losses: dict[str, torch.FloatTensor] | None = None
    logits: dict[str, torch.FloatTensor] | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


class MultiTaskViTPreTrainedModel(PreTrainedModel):
    config: MultiTaskViTConfig
    config_class = MultiTaskViTConfig
    base_model_prefix = "backbone"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    # The backbone's own `_no_split_modules` are added when the model is built.
    _no_split_modules = ["MultiTaskHead"]
    _supports_sdpa = True
    # Each task's loss is already a mean over its present targets, so Trainer must not pass
    # `num_items_in_batch` into `forward` and must scale the loss for gradient accumulation itself.
    accepts_loss_kwargs = False
    # `save_pretrained` writes the backbone's parameters under transformers' original (v4) names by
    # default, and `from_pretrained` converts them back. Trainer's checkpoint loaders (plain, FSDP,
    # DeepSpeed) read names raw, so MultiTaskTrainer turns this off while it writes a checkpoint.
    save_in_original_format = True
    # A local folder holding the image processor of this model's photos (the folder it was loaded from, or its
    # backbone's): `save_pretrained` writes that processor beside the weights when the folder has none.
    image_processor_folder: str | None = None
    training_row_keys = None  # its training rows' hashed keys (training_rows.safetensors; mtl_hf.data.row_keys)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, allow_pickled_weights: bool = False, **kwargs):
        """`PreTrainedModel.from_pretrained`, refusing pickled weights (`pytorch_model.bin`, which can run code
        when loaded) unless `allow_pickled_weights=True`: a model is read from safetensors only."""
        if not allow_pickled_weights:
            refuse_pickled_weights(pretrained_model_name_or_path)
            kwargs.setdefault("use_safetensors", True)
        model = super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        model.image_processor_folder = processor_folder(pretrained_model_name_or_path)
        model.training_row_keys = read_training_rows(pretrained_model_name_or_path)
        return model

    def save_pretrained(self, save_directory, *args, **kwargs):
        kwargs.setdefault("save_original_format", self.save_in_original_format)
        pipeline = remote_pipeline()
        if pipeline is not None:  # config.json names the pipeline file that goes beside it
            self.config.custom_pipelines = {pipeline.REMOTE_PIPELINE_TASK: dict(pipeline.REMOTE_PIPELINE)}
        result = super().save_pretrained(save_directory, *args, **kwargs)
        if pipeline is not None and kwargs.get("is_main_process", True):
            from transformers.dynamic_module_utils import custom_object_save

            # Copies the pipeline's file and the one it imports (images_mtl_vit.py), as transformers copies this one.
            custom_object_save(pipeline.MultiTaskImageClassificationPipeline, save_directory)
            write_endpoint_files(save_directory)
        source = self.image_processor_folder
        target = os.path.join(save_directory, PROCESSOR_FILE)
        if kwargs.get("is_main_process", True) and source is not None and not os.path.exists(target):
            import shutil

            shutil.copyfile(os.path.join(source, PROCESSOR_FILE), target)
        if kwargs.get("is_main_process", True) and self.training_row_keys is not None:
            write_training_rows(save_directory, self.training_row_keys)
        return result

    def _init_weights(self, module: nn.Module) -> None:
        # Backbone modules are initialised by the backbone's own `_init_weights` (transformers dispatches to each
        # sub-model); this covers the heads, and task adapters, which start as no change (`up` at zero).
        if isinstance(module, nn.Linear):
            init.trunc_normal_(module.weight, mean=0.0, std=self.config.initializer_range)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, LowRankUpdate):
            init.kaiming_uniform_(module.down, a=5**0.5)
            init.zeros_(module.up)
        else:
            super()._init_weights(module)


class MultiTaskViTModel(MultiTaskViTPreTrainedModel):
    r"""
    A vision backbone (ViT by default) with one head per task of `config.tasks`.

    Example:

    ```python
    >>> import torch
    >>> from mtl_hf import MultiTaskViTConfig, MultiTaskViTModel

    >>> model = MultiTaskViTModel(config)  # config as in MultiTaskViTConfig's example
    >>> out = model(torch.randn(2, 3, 32, 32), labels={"category": torch.tensor([0, -100])})
    >>> out.loss, out.logits["category"].shape
    ```
    """

    def __init__(self, config: MultiTaskViTConfig):
        super().__init__(config)
        self.backbone = backbone_from_config(config.backbone_config)
        if config.lora is not None:
            inject_lora(self.backbone, config.lora)
        # A task without its own pooling pools as the backbone does; the config records the choice.
        self.default_pooling = default_pooling(self.backbone)
        config.tasks = [with_pooling(spec, self.default_pooling) for spec in config.tasks]
        self.task_adapter = TaskPathAdapter(self.backbone, config.task_adapter) if config.task_adapter else None
        self.feature_size = feature_size(config.backbone_config, self.backbone)
        for spec in config.task_specs:
            check_pooling(spec, self.backbone)
        self.heads = nn.ModuleDict({task.name: MultiTaskHead(self.feature_size, task) for task in config.task_specs})
        self._tasks = {task.name: task for task in config.task_specs}
        self.post_init()

    @property
    def task_names(self) -> list[str]:
        return list(self._tasks)

    @property
    def image_size(self) -> tuple[int, int]:
        """The (height, width) of the images the backbone was built for: its config's, or a timm model's own."""
        return image_size(self.config.backbone_config, self.backbone)

    def get_input_embeddings(self) -> nn.Module:
        return self.backbone.get_input_embeddings()

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: dict[str, torch.Tensor] | None = None,
        tasks: list[str] | tuple[str, ...] | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        **kwargs,
    ) -> MultiTaskOutput:
        r"""
        pixel_values (`torch.FloatTensor` of shape `(batch_size, num_channels, height, width)`):
            Normalised images, as the image processor returns them.
        labels (`dict[str, torch.Tensor]`, *optional*):
            Targets for any subset of the tasks (see the module docstring for shapes and the
            missing-value markers). When given, the output carries `loss` and `task_losses`.
        tasks (`list[str]`, *optional*):
            The heads to run. Defaults to every task; a batch that serves one task can run just
            that head. Every task in `labels` must be among them.
        """
        run = tasks_to_run(self.task_names, tasks, labels)
        backbone_kwargs = {"output_hidden_states": output_hidden_states, "output_attentions": output_attentions}
        backbone_kwargs = {**{key: value for key, value in backbone_kwargs.items() if value is not None}, **kwargs}
        adapted = self.task_adapter.tasks if self.task_adapter is not None else ()
        outputs, logits = {}, {}  # the heads' own outputs; the same in the targets' units
        backbone_output = None  # the first pass's: the backbone as it is, unless only adapted tasks ran
        for on_adapted_path in (False, True):  # one backbone pass per path that serves a task of `run`
            names = [name for name in run if (name in adapted) == on_adapted_path]
            if not names:
                continue
            with self.task_adapter.applied() if on_adapted_path else contextlib.nullcontext():
                passed = self.backbone(pixel_values=pixel_values, **backbone_kwargs)
            backbone_output = passed if backbone_output is None else backbone_output
            tokens, pooled = as_token_sequence(passed.last_hidden_state), {}
            for name in names:
                mode = self._tasks[name].pooling
                if mode not in pooled:
                    pooled[mode] = pool(tokens, mode, passed)
                outputs[name] = self.heads[name](pooled[mode])
                logits[name] = self.heads[name].in_target_units(outputs[name])

        loss = task_losses = None
        if labels is not None:
            task_losses = {name: self._task_loss(name, outputs[name], target) for name, target in labels.items()}
            loss = sum(self._tasks[name].loss_weight * value for name, value in task_losses.items())

        return MultiTaskOutput(
            loss=loss,
            task_losses=task_losses,
            logits=logits,
            hidden_states=getattr(backbone_output, "hidden_states", None),
            attentions=getattr(backbone_output, "attentions", None),
        )

    def task_loss_of_logits(self, name: str, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Task `name`'s loss, as `forward` computes it, over `logits` as `forward` returns them (in the targets'
        units) and their targets: the loss of a whole evaluation set at once, whatever its batches were."""
        head = self.heads[name]
        outputs = head.standardized(logits) if head.target_statistics is not None else logits
        return self._task_loss(name, outputs, target)

    def task_loss_denominator(self, name: str, target: torch.Tensor) -> torch.Tensor:
        """What task `name`'s loss in `forward` is a mean over, for these targets: the number of present targets,
        or with class weights the sum of their classes' weights. Losses of several batches (the ranks' under DDP)
        combine into their union's in these proportions."""
        return loss_denominator(self._tasks[name], target, self.heads[name].loss_weight_tensor(target.device))

    def _task_loss(self, name: str, outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        head = self.heads[name]
        standardize = head.standardized if head.target_statistics is not None else None
        weights = head.loss_weight_tensor(outputs.device)
        return task_loss(self._tasks[name], outputs, target, standardize=standardize, weights=weights)

    def set_target_scaling(self, name: str, scaling: str, statistics: dict | None) -> None:
        """Sets task `name`'s `target_scaling` and `target_statistics` in the config and in its head."""
        self.update_task(name, target_scaling=scaling, target_statistics=statistics)

    def update_task(self, name: str, **fields) -> None:
        """Changes fields of task `name`'s spec that leave its head's shape as it is (target scaling, loss
        options), in the config and in the head."""
        if name not in self._tasks:
            raise KeyError(f"unknown task {name!r}; this model's tasks are {self.task_names}")
        shaping = [field for field in _HEAD_SHAPE_FIELDS if field in fields]
        if shaping:
            raise ValueError(f"task {name!r}: {shaping} make a new head; use remove_task and add_task")
        spec = TaskSpec.from_dict({**self._tasks[name].to_dict(), **fields})
        self._tasks[name] = spec
        self.config.tasks = [spec.to_dict() if task["name"] == name else task for task in self.config.tasks]
        self.heads[name].set_target_statistics(spec.target_statistics if spec.scaled_targets else None)
        self.heads[name].set_loss_weights(balanced_weights(spec))

    def add_task(self, task: TaskSpec | dict) -> None:
        """Adds a freshly initialised head for `task`; the backbone and the other heads stay untouched."""
        spec = task if isinstance(task, TaskSpec) else TaskSpec.from_dict(task)
        spec = TaskSpec.from_dict(with_pooling(spec.to_dict(), self.default_pooling))
        if spec.name in self._tasks:
            raise ValueError(f"task {spec.name!r} exists already; remove_task({spec.name!r}) first to replace it")
        reference = next(self.backbone.parameters())
        check_pooling(spec, self.backbone)
        head = MultiTaskHead(self.feature_size, spec).to(device=reference.device, dtype=reference.dtype)
        head.apply(self._init_weights)
        self.heads[spec.name] = head
        self._tasks[spec.name] = spec
        self.config.tasks = [*self.config.tasks, spec.to_dict()]

    def remove_task(self, name: str) -> None:
        """Drops the head of task `name`; the backbone and the other heads stay untouched."""
        if name not in self._tasks:
            raise KeyError(f"unknown task {name!r}; this model's tasks are {self.task_names}")
        if len(self._tasks) == 1:
            raise ValueError(f"cannot remove {name!r}, the model's only task: a model needs at least one task")
        if self.task_adapter is not None and name in self.task_adapter.tasks:
            raise ValueError(f"task {name!r} reads the backbone through the task adapter: it cannot be removed alone")
        del self.heads[name]
        del self._tasks[name]
        self.config.remove_task(name)

    def add_lora(
        self, rank: int, alpha: float | None = None, dropout: float = 0.0, target_modules: list[str] | None = None
    ) -> None:
        """Adds LoRA adapters (`peft`) to the backbone's `target_modules` (by default its attention's query and value
        projections, or a convolutional backbone's pointwise layers) and freezes the backbone's own weights: only the
        adapters and the heads train. Recorded in `config.lora`, so that a saved model rebuilds them on loading."""
        if self.config.lora is not None:
            raise ValueError(f"the backbone has LoRA adapters already ({self.config.lora}); merge_lora() first")
        targets = list(target_modules) if target_modules else default_lora_targets(self.backbone)
        lora = checked_lora({"rank": rank, "alpha": alpha, "dropout": dropout, "target_modules": targets})
        inject_lora(self.backbone, lora)
        self.config.lora = lora

    def add_task_adapter(self, tasks: list[str], rank: int = 8, target_modules: list[str] | None = None) -> None:
        """Low-rank adapters on the path of `tasks` only (`adapters_mtl_vit.py`): the other heads' answers stay."""
        if self.task_adapter is not None or not tasks or not set(tasks) <= set(self._tasks):
            raise ValueError(f"add_task_adapter: tasks {tasks} must be some of {self.task_names}, and once a model")
        targets = list(target_modules) if target_modules else default_lora_targets(self.backbone)
        settings = checked_task_adapter({"tasks": list(tasks), "rank": rank, "alpha": rank, "target_modules": targets})
        self.task_adapter = TaskPathAdapter(self.backbone, settings).to(next(self.backbone.parameters()))
        self.task_adapter.apply(self._init_weights)
        self.config.task_adapter = settings

    def merge_lora(self) -> None:
        """Folds the LoRA adapters into the backbone's weights and removes them: a plain model, the same answers,
        which loads without `peft` (for export and the Hub)."""
        if self.config.lora is None:
            raise ValueError("the model has no LoRA adapters to merge")
        merge_lora_layers(self.backbone)
        self.config.lora = None

    def save_backbone(self, save_directory: str | os.PathLike) -> None:
        """Saves the backbone alone (its config and safetensors weights, no task heads), as `AutoModel` loads it:
        the starting point that `from_backbone` (the recipes' `backbone:`) takes, e.g. after pretraining."""
        if self.config.lora is not None:
            raise ValueError("the backbone has LoRA adapters: merge_lora() first, so that it saves as a plain backbone")
        self.backbone.save_pretrained(save_directory)

    @classmethod
    def from_backbone(
        cls,
        pretrained_model_name_or_path: str,
        tasks: list[TaskSpec | dict],
        *,
        initializer_range: float = 0.02,
        allow_pickled_weights: bool = False,
        **backbone_kwargs,
    ) -> MultiTaskViTModel:
        """
        Builds a model whose backbone weights come from a pretrained checkpoint (a Hub id or a local
        folder saved by `save_pretrained`) and whose task heads are freshly initialised.

        `backbone_kwargs` go to `AutoModel.from_pretrained` (e.g. `revision`, `cache_dir`). Pickled
        backbone weights are refused unless `allow_pickled_weights=True`, as in `from_pretrained`.
        """
        if not allow_pickled_weights:
            refuse_pickled_weights(pretrained_model_name_or_path)
            backbone_kwargs.setdefault("use_safetensors", True)
        hub_kwargs = {key: backbone_kwargs[key] for key in _HUB_KWARGS if key in backbone_kwargs}
        backbone_config = AutoConfig.from_pretrained(pretrained_model_name_or_path, **hub_kwargs)
        if isinstance(backbone_config, MultiTaskViTConfig):  # a multi-task model's backbone, without its heads
            backbone = cls.from_pretrained(pretrained_model_name_or_path, **backbone_kwargs).backbone
            if backbone_config.lora is not None:
                raise ValueError(f"{pretrained_model_name_or_path} has LoRA adapters: merge_lora() it first")
        else:
            if takes_pooling_flag(type(backbone_config)):
                backbone_kwargs.setdefault("add_pooling_layer", False)
            backbone = AutoModel.from_pretrained(pretrained_model_name_or_path, **backbone_kwargs)
        config = cls.config_class(backbone_config=backbone.config, tasks=tasks, initializer_range=initializer_range)
        model = cls(config)
        model.backbone.load_state_dict(backbone.state_dict())
        model.config.name_or_path = str(pretrained_model_name_or_path)
        model.image_processor_folder = processor_folder(pretrained_model_name_or_path)
        return model


_HEAD_SHAPE_FIELDS = ("name", "type", "labels", "num_outputs", "pooling", "dropout", "hidden_size")

# Saved models carry this file and name it in `auto_map` (see the configuration file).
MultiTaskViTModel.register_for_auto_class("AutoModel")

__all__ = [
    "MultiTaskHead",
    "MultiTaskOutput",
    "MultiTaskViTModel",
    "MultiTaskViTPreTrainedModel",
    "refuse_pickled_weights",
]
