"""Configuration of the multi-task vision transformer: a backbone config plus one spec per task.

This file imports nothing from the rest of `mtl_hf` but its sibling `tasks_mtl_vit.py`, so that it can
travel with a saved model as remote code (`trust_remote_code=True`) and work where the package is not
installed.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from transformers import MODEL_MAPPING, AutoConfig, PreTrainedConfig

from .calibration_mtl_vit import checked_calibration
from .tasks_mtl_vit import POOLING_MODES, TARGET_SCALINGS, TASK_TYPES, TaskSpec, _is_real_number

TASKS_FORMAT = 2
"""What a saved config's task entries mean: 2, every regression task records its `target_scaling`; a config
without `tasks_format` (mtl_hf 0.1.0) trained its regression heads on raw targets."""


def backbone_hidden_size(backbone_config: PreTrainedConfig) -> int:
    """Width of the vectors that the backbone's `last_hidden_state` carries."""
    hidden_size = getattr(backbone_config, "hidden_size", None)
    if isinstance(hidden_size, int):
        return hidden_size
    hidden_sizes = getattr(backbone_config, "hidden_sizes", None)
    if hidden_sizes:
        return hidden_sizes[-1]
    raise ValueError(
        f"backbone config {type(backbone_config).__name__} has neither `hidden_size` nor `hidden_sizes`; "
        "use a vision backbone whose AutoModel returns `last_hidden_state` (e.g. ViT, DeiT, DINOv2)"
    )


class MultiTaskViTConfig(PreTrainedConfig):
    r"""
    Configuration of a [`MultiTaskViTModel`]: a vision backbone shared by several task heads.

    Args:
        backbone_config (`PreTrainedConfig` or `dict`, *optional*):
            Configuration of the shared backbone. Any vision config whose `AutoModel` returns
            `last_hidden_state` works (ViT, DeiT, DINOv2, ...). A dict needs a `model_type` key
            (it defaults to `"vit"`). Defaults to `ViTConfig()` (ViT-Base/16, 224 px).
        tasks (`list[dict | TaskSpec]`):
            The tasks, one head each, in order. Each entry is a [`TaskSpec`] or a dict with its
            fields (`name`, `type`, `labels` or `num_outputs`, `loss_weight`, `pooling`, `dropout`,
            `hidden_size`). Stored as plain dicts so that `config.json` stays readable.
        initializer_range (`float`, *optional*, defaults to 0.02):
            Standard deviation of the truncated normal initialiser of the heads' linear layers.
        tasks_format (`int`, *optional*):
            Set by the config itself (`TASKS_FORMAT`); a saved config without it was written by mtl_hf
            0.1.0, whose regression tasks then keep raw targets (`target_scaling="none"`).
        training_data (`list[dict]`, *optional*):
            What the model was trained on, set by the trainer: one entry per training source with a location,
            `{"data": path, URL or Hub id, "split": ..., "rows": ...}` (a local path made absolute), so that
            scoring those rows again can be refused (`mtl-hf eval`). A model trained further adds its new data.
        lora (`dict`, *optional*):
            LoRA adapters in the backbone: `{"rank": r, "alpha": a, "dropout": p, "target_modules": [...]}`. The
            model builds them (with `peft`) so that its weights, which hold the frozen base weights and the
            adapters, load back; `merge_lora()` folds them into the base weights and clears this field.
        task_adapter (`dict`, *optional*):
            Low-rank adapters applied on some tasks' path only (`adapters_mtl_vit.py`; no peft):
            `{"tasks": [...], "rank": r, "alpha": a, "target_modules": [...]}`. Those tasks' heads read the adapted
            backbone, the others the backbone as it is; set by `add_task_adapter()` (tasks added to a trained model).
        calibration (`dict`, *optional*):
            Per classification or multilabel task, the temperature its logits are divided by before softmax /
            sigmoid, and per multilabel label its decision threshold, chosen on validation rows:
            `{task: {"temperature": T, "thresholds": {label: t}, "rows": n, "data": ..., "ece": {...}}}`
            (`calibration_mtl_vit.py`). Set at the end of training, or by `mtl-hf calibrate`; a task without an
            entry answers at T = 1 and threshold 0.5.

    Example:

    ```python
    >>> from transformers import ViTConfig
    >>> from mtl_hf import MultiTaskViTConfig, MultiTaskViTModel

    >>> config = MultiTaskViTConfig(
    ...     backbone_config=ViTConfig(image_size=32, patch_size=4, hidden_size=64, num_hidden_layers=2,
    ...                               num_attention_heads=4, intermediate_size=128),
    ...     tasks=[
    ...         {"name": "category", "type": "classification", "labels": ["shirt", "shoe", "bag"]},
    ...         {"name": "tags", "type": "multilabel", "labels": ["red", "striped", "leather", "sale"]},
    ...         {"name": "price", "type": "regression"},
    ...     ],
    ... )
    >>> model = MultiTaskViTModel(config)
    ```
    """

    model_type = "mtl_vit"
    # A classic `__init__` and `sub_configs` instead of dataclass fields and `SubConfigSpec`: transformers 5.0-5.19
    # have neither, and 5.20+ keep a subclass's own `__init__`, so one file loads on every 5.x.
    sub_configs = {"backbone_config": AutoConfig}
    has_no_defaults_at_init = True  # a config needs its tasks

    def __init__(
        self,
        backbone_config: dict | PreTrainedConfig | None = None,
        tasks: list[dict[str, Any]] | None = None,
        initializer_range: float = 0.02,
        tasks_format: int | None = None,
        training_data: list[dict[str, Any]] | None = None,
        lora: dict[str, Any] | None = None,
        task_adapter: dict[str, Any] | None = None,
        calibration: dict[str, Any] | None = None,
        **kwargs,
    ):
        if backbone_config is None:
            backbone_config = _backbone_config_from_dict({})
        elif isinstance(backbone_config, dict):
            backbone_config = _backbone_config_from_dict(backbone_config)
        elif not isinstance(backbone_config, PreTrainedConfig):
            raise TypeError(
                "backbone_config must be a PreTrainedConfig (e.g. ViTConfig(...)), a dict with a "
                f"'model_type' key, or None; got {type(backbone_config).__name__}"
            )
        if backbone_config.model_type != "timm_wrapper":  # a timm model's width is known once it is built
            backbone_hidden_size(backbone_config)
        _check_vision_backbone(backbone_config)
        if tasks_format is None and kwargs.get("transformers_version") is not None:
            # Saved by mtl_hf 0.1.0, whose regression heads learned raw targets: they keep doing so.
            tasks = [_raw_regression(task) for task in (tasks or [])]
        if not _is_real_number(initializer_range) or not initializer_range > 0:
            raise ValueError(f"initializer_range must be a positive number, got {initializer_range!r}")
        self.backbone_config = backbone_config
        self.tasks = [spec.to_dict() for spec in _validate_tasks(tasks)]
        self.initializer_range = initializer_range
        self.tasks_format = TASKS_FORMAT
        self.training_data = training_data
        self.lora = checked_lora(lora) if lora is not None else None
        self.task_adapter = checked_task_adapter(task_adapter) if task_adapter is not None else None
        self.calibration = checked_calibration(calibration, self.tasks) if calibration else None
        super().__init__(**kwargs)

    @property
    def task_specs(self) -> list[TaskSpec]:
        """The tasks as [`TaskSpec`] objects, in head order."""
        return [TaskSpec.from_dict(spec) for spec in self.tasks]

    @property
    def task_names(self) -> list[str]:
        return [spec["name"] for spec in self.tasks]

    def get_task(self, name: str) -> TaskSpec:
        for spec in self.tasks:
            if spec["name"] == name:
                return TaskSpec.from_dict(spec)
        raise KeyError(f"unknown task {name!r}; this model's tasks are {self.task_names}")

    def remove_task(self, name: str) -> None:
        """Drops task `name`'s spec and its calibration (the model's `remove_task` drops its head)."""
        self.tasks = [spec for spec in self.tasks if spec["name"] != name]
        if self.calibration:
            self.calibration = {task: entry for task, entry in self.calibration.items() if task != name} or None

    def trained_on(self, data: str, split: str) -> bool:
        """Whether `split` of `data` (as a source's origin names it) is recorded in `training_data`."""
        return any(entry.get("data") == data and entry.get("split") == split for entry in self.training_data or ())


def checked_lora(lora: Any) -> dict[str, Any]:
    """A `lora` entry with its four fields checked (rank and target modules required)."""
    if not isinstance(lora, dict) or not {"rank", "target_modules"} <= set(lora):
        raise ValueError(f"lora must be {{'rank': r, 'alpha': a, 'dropout': p, 'target_modules': [...]}}, got {lora!r}")
    unknown = sorted(set(lora) - {"rank", "alpha", "dropout", "target_modules"})
    if unknown:
        raise ValueError(f"lora: unknown fields {unknown}; its fields are rank, alpha, dropout, target_modules")
    rank, alpha, dropout = lora["rank"], lora.get("alpha"), lora.get("dropout", 0.0)
    alpha = rank if alpha is None else alpha
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"lora rank must be a positive integer, got {rank!r}")
    if not _is_real_number(alpha) or not alpha > 0:
        raise ValueError(f"lora alpha must be a number > 0, got {alpha!r}")
    if not _is_real_number(dropout) or not 0.0 <= dropout < 1.0:
        raise ValueError(f"lora dropout must be in [0, 1), got {dropout!r}")
    targets = lora["target_modules"]
    if isinstance(targets, str) or not targets or not all(isinstance(t, str) and t for t in targets):
        raise ValueError(f"lora target_modules must be a list of module names, got {targets!r}")
    return {"rank": rank, "alpha": float(alpha), "dropout": float(dropout), "target_modules": list(targets)}


def checked_task_adapter(settings) -> dict:
    """A `task_adapter` entry with its fields checked."""
    fields = {"tasks", "rank", "alpha", "target_modules"}
    if not isinstance(settings, dict) or set(settings) != fields:
        raise ValueError(f"task_adapter must have exactly the fields {sorted(fields)}, got {settings!r}")
    rank, alpha = settings["rank"], settings["alpha"]
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"task_adapter rank must be a positive integer, got {rank!r}")
    if not _is_real_number(alpha) or not alpha > 0:
        raise ValueError(f"task_adapter alpha must be a number > 0, got {alpha!r}")
    for field in ("tasks", "target_modules"):
        values = settings[field]
        if isinstance(values, str) or not values or not all(isinstance(value, str) for value in values):
            raise ValueError(f"task_adapter {field} must be a list of names, got {values!r}")
    return {**settings, "alpha": float(alpha), "tasks": list(settings["tasks"])}


def _backbone_config_from_dict(config_dict: dict[str, Any]) -> PreTrainedConfig:
    config_dict = dict(config_dict)
    model_type = config_dict.pop("model_type", "vit")
    try:
        return AutoConfig.for_model(model_type, **config_dict)
    except ValueError as error:
        raise ValueError(
            f"backbone_config: unknown model_type {model_type!r}; use a vision model type known to "
            "AutoConfig, such as 'vit', 'deit' or 'dinov2'"
        ) from error


def _raw_regression(task: Any) -> Any:
    if isinstance(task, dict) and task.get("type") == "regression" and "target_scaling" not in task:
        return {**task, "target_scaling": "none"}
    return task


def _check_vision_backbone(backbone_config: PreTrainedConfig) -> None:
    # MODEL_MAPPING: transformers' public config class -> AutoModel class map (AutoModel's own).
    model_class = MODEL_MAPPING.get(type(backbone_config), None)
    if model_class is not None and getattr(model_class, "main_input_name", "pixel_values") != "pixel_values":
        raise ValueError(
            f"backbone model_type {backbone_config.model_type!r} is not a vision model (its input is "
            f"{model_class.main_input_name!r}, not images): use a vision backbone such as vit, deit or dinov2"
        )


def _validate_tasks(tasks: Any) -> list[TaskSpec]:
    if tasks is None or (isinstance(tasks, (list, tuple)) and len(tasks) == 0):
        raise ValueError(
            "no tasks given: pass tasks=[{'name': ..., 'type': 'classification' | 'multilabel' | "
            "'regression', ...}, ...] with at least one task"
        )
    if isinstance(tasks, (str, dict)) or not isinstance(tasks, (list, tuple)):
        raise TypeError(f"tasks must be a list of task specs (dicts or TaskSpec), got {type(tasks).__name__}")
    specs = [
        TaskSpec(**dataclasses.asdict(task)) if isinstance(task, TaskSpec) else TaskSpec.from_dict(task)
        for task in tasks
    ]
    names = [spec.name for spec in specs]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"duplicate task names {duplicates}; every task needs its own name")
    return specs


# Saved configs name this file in `auto_map`, so that `trust_remote_code=True` can load them where
# mtl_hf is not installed (save_pretrained copies the file beside config.json).
MultiTaskViTConfig.register_for_auto_class()

__all__ = [
    "MultiTaskViTConfig",
    "TaskSpec",
    "TASK_TYPES",
    "POOLING_MODES",
    "TARGET_SCALINGS",
    "backbone_hidden_size",
    "checked_lora",
]
