"""Configuration of the multi-task vision transformer: a backbone config plus one spec per task.

This file imports nothing from the rest of `mtl_hf`, so that it can travel with a saved model as
remote code (`trust_remote_code=True`) and work where the package is not installed.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any

from transformers import MODEL_MAPPING, AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

TASK_TYPES = ("classification", "multilabel", "regression")
"""`classification`: one label per image (softmax, cross-entropy).
`multilabel`: any number of labels per image (sigmoid, binary cross-entropy).
`regression`: one or more real values per image (mean squared error)."""

POOLING_MODES = ("cls", "mean")
TARGET_SCALINGS = ("standard", "none")
TASKS_FORMAT = 2
"""What a saved config's task entries mean: 2, every regression task records its `target_scaling`; a config
without `tasks_format` (mtl_hf 0.1.0) trained its regression heads on raw targets."""

# Task names become module names (`heads.<name>`), metric keys (`eval_<name>_accuracy`) and
# keyword-friendly identifiers, so they keep to letters, digits and underscores.
_TASK_NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass
class TaskSpec:
    r"""
    One task of a multi-task model: what it predicts and how its head is built.

    Args:
        name (`str`):
            Identifier of the task: letters, digits and underscores, not starting with a digit
            (for example `"category"` or `"base_colour"`). Keys of the `labels` and `logits` dicts.
        type (`str`):
            One of `"classification"` (one label per image), `"multilabel"` (several labels per
            image) or `"regression"` (real-valued outputs).
        labels (`list[str]`, *optional*):
            Names of the classes, in the order of the head's outputs. Required for the two
            classification types unless `num_outputs` is given, in which case the names default to
            `LABEL_0`, `LABEL_1`, ...; not allowed for regression.
        num_outputs (`int`, *optional*):
            Number of outputs of the head. For regression it defaults to 1; for the classification
            types it is `len(labels)`.
        loss_weight (`float`, *optional*, defaults to 1.0):
            The task's priority: it multiplies the weight that the loss-balancing method gives the
            task at every step (with equal weights, the weight itself: the model's own `loss` is
            `sum(loss_weight * task_loss)`). Must be finite and >= 0.
        pooling (`str`, *optional*):
            How the backbone's token sequence becomes one vector: `"cls"` takes the class token
            (the first), `"mean"` averages all tokens (or all positions of a convolutional map).
            Defaults to the backbone's own way: `"cls"` where it has a class token (ViT, DeiT,
            DINOv2, ...), `"mean"` otherwise (Swin, ConvNeXt, ...); the model records the choice.
        dropout (`float`, *optional*, defaults to 0.0):
            Dropout probability applied to the pooled vector (and after the hidden layer, if any).
        hidden_size (`int`, *optional*):
            Size of an optional hidden layer (Linear + GELU) between the pooled vector and the
            output layer. `None` gives a linear head.
        target_scaling (`str`, *optional*):
            Regression only: `"standard"` (the default) trains the head on targets standardised with
            `target_statistics` (mean 0, standard deviation 1), so that a price in dollars weighs in the
            loss as much as a share in [0, 1], and maps its outputs back, so that the model's `logits`,
            metrics and pipeline answers are in the targets' own units; `"none"` uses the raw values.
        target_statistics (`dict`, *optional*):
            Regression only: `{"mean": [...], "std": [...], "count": n}`, one mean and standard deviation
            per output, computed from the `count` training rows that have a target (the data sources do
            it). Without them, `"standard"` scaling is the identity.
    """

    name: str
    type: str
    labels: list[str] | None = None
    num_outputs: int | None = None
    loss_weight: float = 1.0
    pooling: str | None = None
    dropout: float = 0.0
    hidden_size: int | None = None
    target_scaling: str | None = None
    target_statistics: dict[str, Any] | None = None

    def __post_init__(self):
        if not isinstance(self.name, str) or not _TASK_NAME_PATTERN.match(self.name):
            raise ValueError(
                f"invalid task name {self.name!r}: use letters, digits and underscores, not starting "
                "with a digit (e.g. 'base_colour')"
            )
        where = f"task {self.name!r}"
        if self.type not in TASK_TYPES:
            raise ValueError(f"{where}: unknown type {self.type!r}; use one of {', '.join(TASK_TYPES)}")
        if self.type == "regression":
            if self.labels is not None:
                raise ValueError(
                    f"{where}: labels given for a regression task; regression outputs are real "
                    "values, so drop `labels` and set `num_outputs` instead"
                )
            if self.num_outputs is None:
                self.num_outputs = 1
        else:
            self._resolve_labels(where)
        if not isinstance(self.num_outputs, int) or isinstance(self.num_outputs, bool) or self.num_outputs < 1:
            raise ValueError(f"{where}: num_outputs must be a positive integer, got {self.num_outputs!r}")
        if not _is_real_number(self.loss_weight) or not math.isfinite(self.loss_weight) or self.loss_weight < 0:
            raise ValueError(f"{where}: loss_weight must be a finite number >= 0, got {self.loss_weight!r}")
        self.loss_weight = float(self.loss_weight)
        if self.pooling is not None and self.pooling not in POOLING_MODES:
            raise ValueError(f"{where}: unknown pooling {self.pooling!r}; use one of {', '.join(POOLING_MODES)}")
        if not _is_real_number(self.dropout) or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"{where}: dropout must be in [0, 1), got {self.dropout!r}")
        if self.hidden_size is not None and (
            not isinstance(self.hidden_size, int) or isinstance(self.hidden_size, bool) or self.hidden_size < 1
        ):
            raise ValueError(f"{where}: hidden_size must be a positive integer or None, got {self.hidden_size!r}")
        self._check_target_scaling(where)

    def _check_target_scaling(self, where: str) -> None:
        if self.type != "regression":
            if self.target_scaling is not None or self.target_statistics is not None:
                raise ValueError(f"{where}: target_scaling and target_statistics apply to regression tasks only")
            return
        if self.target_scaling is None:
            self.target_scaling = "standard"
        if self.target_scaling not in TARGET_SCALINGS:
            raise ValueError(
                f"{where}: unknown target_scaling {self.target_scaling!r}; use one of {', '.join(TARGET_SCALINGS)}"
            )
        stats = self.target_statistics
        if stats is None:
            return
        if not isinstance(stats, dict) or set(stats) != {"mean", "std", "count"}:
            raise ValueError(f"{where}: target_statistics must be {{'mean': [...], 'std': [...], 'count': n}}")
        if len(stats["mean"]) != self.num_outputs or len(stats["std"]) != self.num_outputs:
            raise ValueError(f"{where}: target_statistics needs one mean and one std per output ({self.num_outputs})")
        if not all(_is_real_number(v) and math.isfinite(v) for v in [*stats["mean"], *stats["std"]]) or not all(
            v > 0 for v in stats["std"]
        ):
            raise ValueError(f"{where}: target_statistics must be finite, with every std > 0, got {stats}")
        self.target_statistics = {
            "mean": [float(v) for v in stats["mean"]],
            "std": [float(v) for v in stats["std"]],
            "count": int(stats["count"]),
        }

    @property
    def scaled_targets(self) -> bool:
        """Whether the head learns standardised targets (regression, `"standard"` scaling, statistics known)."""
        return self.target_scaling == "standard" and self.target_statistics is not None

    def _resolve_labels(self, where: str) -> None:
        if self.labels is None:
            if self.num_outputs is None:
                raise ValueError(f"{where}: a {self.type} task needs `labels` (the class names)")
            if not isinstance(self.num_outputs, int) or self.num_outputs < 1:
                raise ValueError(f"{where}: num_outputs must be a positive integer, got {self.num_outputs!r}")
            self.labels = [f"LABEL_{i}" for i in range(self.num_outputs)]
        if isinstance(self.labels, str) or not isinstance(self.labels, (list, tuple)):
            raise ValueError(f"{where}: labels must be a list of class names, got {type(self.labels).__name__}")
        self.labels = list(self.labels)
        if not self.labels:
            raise ValueError(f"{where}: labels is empty; give the class names")
        bad = [label for label in self.labels if not isinstance(label, str) or not label]
        if bad:
            raise ValueError(f"{where}: labels must be non-empty strings, got {bad[0]!r}")
        seen = set()
        duplicates = [label for label in self.labels if label in seen or seen.add(label)]
        if duplicates:
            raise ValueError(f"{where}: duplicate labels {sorted(set(duplicates))}; each class name must be unique")
        if self.type == "classification" and len(self.labels) < 2:
            raise ValueError(
                f"{where}: a classification task needs at least 2 labels, got {len(self.labels)}; "
                "for a yes/no attribute use type 'multilabel' with one label"
            )
        if self.num_outputs is not None and self.num_outputs != len(self.labels):
            raise ValueError(
                f"{where}: num_outputs={self.num_outputs} disagrees with the {len(self.labels)} labels; "
                "drop num_outputs (it follows from labels)"
            )
        self.num_outputs = len(self.labels)

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.labels or []))

    @property
    def label2id(self) -> dict[str, int]:
        return {label: i for i, label in enumerate(self.labels or [])}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, spec: dict[str, Any]) -> TaskSpec:
        if not isinstance(spec, dict):
            raise TypeError(f"a task spec must be a dict or TaskSpec, got {type(spec).__name__}: {spec!r}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(spec) - known)
        if unknown:
            name = spec.get("name", "?")
            raise ValueError(f"task {name!r}: unknown fields {unknown}; known fields are {sorted(known)}")
        missing = [key for key in ("name", "type") if key not in spec]
        if missing:
            raise ValueError(f"task spec {spec!r} lacks {' and '.join(missing)}")
        return cls(**spec)


def _is_real_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


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
    sub_configs_defaults = {"backbone_config": SubConfigSpec(config_class=AutoConfig, model_type="vit")}

    backbone_config: dict | PreTrainedConfig | None = None
    tasks: list[dict[str, Any]] = field(default_factory=list)
    initializer_range: float = 0.02
    tasks_format: int | None = None

    def __post_init__(self, **kwargs):
        if isinstance(self.backbone_config, dict):
            self.backbone_config = _backbone_config_from_dict(self.backbone_config)
        elif self.backbone_config is not None and not isinstance(self.backbone_config, PreTrainedConfig):
            raise TypeError(
                "backbone_config must be a PreTrainedConfig (e.g. ViTConfig(...)), a dict with a "
                f"'model_type' key, or None; got {type(self.backbone_config).__name__}"
            )
        super().__post_init__(**kwargs)
        backbone_hidden_size(self.backbone_config)
        _check_vision_backbone(self.backbone_config)
        if self.tasks_format is None and getattr(self, "transformers_version", None) is not None:
            # Saved by mtl_hf 0.1.0, whose regression heads learned raw targets: they keep doing so.
            self.tasks = [_raw_regression(task) for task in (self.tasks or [])]
        self.tasks = [spec.to_dict() for spec in _validate_tasks(self.tasks)]
        self.tasks_format = TASKS_FORMAT
        if not _is_real_number(self.initializer_range) or not self.initializer_range > 0:
            raise ValueError(f"initializer_range must be a positive number, got {self.initializer_range!r}")

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

__all__ = ["MultiTaskViTConfig", "TaskSpec", "TASK_TYPES", "POOLING_MODES", "TARGET_SCALINGS", "backbone_hidden_size"]
