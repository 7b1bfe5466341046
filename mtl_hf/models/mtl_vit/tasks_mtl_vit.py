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
`regression`: one or more real values per image (mean squared error, or the task's `loss`)."""

POOLING_MODES = ("cls", "mean", "pooler")
TARGET_SCALINGS = ("standard", "none")
REGRESSION_LOSSES = ("mse", "l1", "huber")
BALANCED = "balanced"
LOSS_FIELDS = ("label_smoothing", "class_weights", "pos_weight", "label_counts", "loss", "huber_delta")
"""The fields that shape a task's loss (not its head): a resumed run takes them from its checkpoint."""
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
            How the backbone's output becomes one vector: `"cls"` takes the class token (the first),
            `"mean"` averages all tokens (or all positions of a convolutional map), `"pooler"` takes the
            pooled output that the backbone itself computes and was pretrained with (CLIP's normed class
            token, SigLIP's attention-pooling head, ConvNeXt's normed mean, a timm model's head).
            Defaults to the backbone's own way: `"pooler"` where it defines one (CLIP and SigLIP vision
            towers, ConvNeXt, timm models), else `"cls"` where it has a class token (ViT, DeiT, DINOv2,
            ...), `"mean"` otherwise (Swin, ...); the model records the choice.
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
        label_smoothing (`float`, *optional*):
            Classification only: the share of each target's probability spread evenly over all classes, in
            [0, 1) (`torch.nn.functional.cross_entropy`'s `label_smoothing`). Unset, the trainer's
            `label_smoothing_factor` applies (and is recorded here); 0 turns smoothing off for this task.
        class_weights (`list[float]` or `"balanced"`, *optional*):
            Classification only: one weight per class, multiplying the loss of the rows of that class; the loss
            is then the weighted mean over the batch's labelled rows (as `cross_entropy(weight=...)`).
            `"balanced"` gives class c the weight `rows / (num_classes * count_c)` from `label_counts`, which
            the trainer counts in the training data before the first step.
        pos_weight (`float`, `list[float]` or `"balanced"`, *optional*):
            Multilabel only: a weight on the positive term of each label's binary cross-entropy (one number for
            every label, or one per label; `binary_cross_entropy_with_logits`'s `pos_weight`). `"balanced"`
            gives label l `(rows - count_l) / count_l` (its negatives per positive) from `label_counts`.
        label_counts (`dict`, *optional*):
            Classification and multilabel: `{"counts": [...], "rows": n}`, how many of the `n` labelled training
            rows carry each label, recorded by the trainer where `"balanced"` weights need them.
        loss (`str`, *optional*):
            Regression only: `"mse"` (the default), `"l1"` (mean absolute error) or `"huber"` (quadratic within
            `huber_delta` of the target, linear beyond: robust to outliers). Computed in the head's units,
            that is on standardised targets under `"standard"` target scaling.
        huber_delta (`float`, *optional*):
            Regression with `loss="huber"` only: where the loss turns linear, in the head's units (defaults to
            1.0: one standard deviation of the targets under `"standard"` scaling).
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
    label_smoothing: float | None = None
    class_weights: list[float] | str | None = None
    pos_weight: float | list[float] | str | None = None
    label_counts: dict[str, Any] | None = None
    loss: str | None = None
    huber_delta: float | None = None

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
        self._check_loss_options(where)

    def _check_loss_options(self, where: str) -> None:
        allowed = _LOSS_FIELDS_OF[self.type]
        for name in LOSS_FIELDS:
            if getattr(self, name) is not None and name not in allowed:
                owners = [kind for kind in TASK_TYPES if name in _LOSS_FIELDS_OF[kind]]
                raise ValueError(
                    f"{where}: {name} applies to {' and '.join(owners)} tasks only, not to a {self.type} task; drop it"
                )
        if self.label_smoothing is not None:
            if not _is_real_number(self.label_smoothing) or not 0.0 <= self.label_smoothing < 1.0:
                raise ValueError(f"{where}: label_smoothing must be a number in [0, 1), got {self.label_smoothing!r}")
            self.label_smoothing = float(self.label_smoothing)
        if self.label_counts is not None:
            self._check_label_counts(where)
        if self.class_weights is not None:
            self.class_weights = self._checked_weights("class_weights", self.class_weights, where, scalar=False)
        if self.pos_weight is not None:
            self.pos_weight = self._checked_weights("pos_weight", self.pos_weight, where, scalar=True)
        if self.type == "regression":
            self._check_regression_loss(where)
        balanced_weights(self)  # a class that never occurs fails here, not at the first step

    def _checked_weights(self, name: str, weights: Any, where: str, *, scalar: bool) -> Any:
        if weights == BALANCED:
            return weights
        if scalar and _is_real_number(weights):
            weights = [weights] * self.num_outputs
        shape = "a number, a list" if scalar else "a list"
        if isinstance(weights, str) or not isinstance(weights, (list, tuple)):
            raise ValueError(
                f"{where}: {name} must be {shape} of {self.num_outputs} numbers or 'balanced', got {weights!r}"
            )
        if len(weights) != self.num_outputs:
            raise ValueError(
                f"{where}: {name} has {len(weights)} values but the task has {self.num_outputs} labels "
                f"({self.labels}); give one per label, in that order"
            )
        if not all(_is_real_number(v) and math.isfinite(v) and v >= 0 for v in weights) or not any(weights):
            raise ValueError(f"{where}: {name} must be finite numbers >= 0, not all 0, got {list(weights)}")
        return [float(v) for v in weights]

    def _check_label_counts(self, where: str) -> None:
        counts = self.label_counts
        if (
            not isinstance(counts, dict)
            or set(counts) != {"counts", "rows"}
            or not isinstance(counts["counts"], (list, tuple))
            or len(counts["counts"]) != self.num_outputs
            or not all(
                isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in [*counts["counts"], counts["rows"]]
            )
        ):
            raise ValueError(
                f"{where}: label_counts must be {{'counts': [one count per label ({self.num_outputs})], 'rows': n}} "
                f"with whole numbers >= 0, got {counts!r}"
            )
        self.label_counts = {"counts": list(counts["counts"]), "rows": counts["rows"]}

    def _check_regression_loss(self, where: str) -> None:
        if self.loss is None:
            self.loss = "mse"
        if self.loss not in REGRESSION_LOSSES:
            raise ValueError(f"{where}: unknown loss {self.loss!r}; use one of {', '.join(REGRESSION_LOSSES)}")
        if self.loss != "huber":
            if self.huber_delta is not None:
                raise ValueError(
                    f"{where}: huber_delta applies to loss 'huber' only, this task's loss is {self.loss!r}"
                )
            return
        if self.huber_delta is None:
            self.huber_delta = 1.0
        if not _is_real_number(self.huber_delta) or not math.isfinite(self.huber_delta) or self.huber_delta <= 0:
            raise ValueError(f"{where}: huber_delta must be a finite number > 0, got {self.huber_delta!r}")
        self.huber_delta = float(self.huber_delta)

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


def balanced_weights(spec: TaskSpec) -> list[float] | None:
    """The loss weights per label that `spec`'s `class_weights` or `pos_weight` give (None: unweighted).

    `"balanced"` reads `label_counts`; until the trainer has counted them it gives None, and the loss
    (`heads_mtl_vit.task_loss`) refuses to run unweighted in its place.
    """
    weights = spec.class_weights if spec.type == "classification" else spec.pos_weight
    if weights != BALANCED:
        return weights
    if spec.label_counts is None:
        return None
    counts, rows = spec.label_counts["counts"], spec.label_counts["rows"]
    where = f"task {spec.name!r}"
    never = [label for label, count in zip(spec.labels, counts, strict=True) if count == 0]
    if never:
        raise ValueError(
            f"{where}: label(s) {never} never occur in the {rows} labelled training rows, so 'balanced' weights "
            "would be infinite; give the weights as a list, or leave those labels out of the task"
        )
    if spec.type == "classification":
        return [rows / (len(counts) * count) for count in counts]
    always = [label for label, count in zip(spec.labels, counts, strict=True) if count >= rows]
    if always:
        raise ValueError(
            f"{where}: label(s) {always} are on in every one of the {rows} labelled training rows, so 'balanced' "
            "pos_weight would be 0; give pos_weight as a number or a list"
        )
    return [(rows - count) / count for count in counts]


def _is_real_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


_LOSS_FIELDS_OF = {
    "classification": ("label_smoothing", "class_weights", "label_counts"),
    "multilabel": ("pos_weight", "label_counts"),
    "regression": ("loss", "huber_delta"),
}


def tasks_to_run(known: list[str], tasks, labels) -> list[str]:
    """The heads a forward runs: `tasks` (default all of `known`), checked against `known` and `labels`."""
    if tasks is None:
        run = known
    else:
        if isinstance(tasks, str):
            tasks = [tasks]
        unknown = [name for name in tasks if name not in known]
        if unknown:
            raise ValueError(f"tasks: unknown task(s) {unknown}; this model's tasks are {known}")
        run = list(dict.fromkeys(tasks))
    if labels is not None:
        if not isinstance(labels, dict):
            raise TypeError(
                f"labels must be a dict {{task_name: tensor}}, got {type(labels).__name__}; "
                f"this model's tasks are {known}"
            )
        if not labels:
            raise ValueError("labels is an empty dict: pass labels=None for inference, or some task's targets")
        unknown = [name for name in labels if name not in known]
        if unknown:
            raise ValueError(f"labels: unknown task(s) {unknown}; this model's tasks are {known}")
        not_run = [name for name in labels if name not in run]
        if not_run:
            raise ValueError(f"labels given for task(s) {not_run} that are not in tasks={list(run)}")
    return run


__all__ = [
    "BALANCED",
    "LOSS_FIELDS",
    "POOLING_MODES",
    "REGRESSION_LOSSES",
    "TARGET_SCALINGS",
    "TASK_TYPES",
    "TaskSpec",
    "balanced_weights",
    "tasks_to_run",
]
