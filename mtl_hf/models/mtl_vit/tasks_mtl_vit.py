"""One task of the multi-task model: `TaskSpec`, its fields and their checks. Part of the remote code that travels
with every saved model (it imports nothing from `mtl_hf`)."""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Any

TASK_TYPES = ("classification", "multilabel", "regression")
"""`classification`: one label per image (softmax, cross-entropy).
`multilabel`: any number of labels per image (sigmoid, binary cross-entropy).
`regression`: one or more real values per image (mean squared error)."""

POOLING_MODES = ("cls", "mean")
TARGET_SCALINGS = ("standard", "none")
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


__all__ = ["POOLING_MODES", "TARGET_SCALINGS", "TASK_TYPES", "TaskSpec"]
