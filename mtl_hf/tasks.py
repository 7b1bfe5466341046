"""Where two descriptions of one task meet, what must agree: the one rule, used by the data, the trainer and
the commands.

- `TARGET_FIELDS` (type, labels, number of outputs) say what a target means: class 3 of `colour` is the
  same colour only where the labels are the same, in the same order. They must agree wherever a task
  meets another description of itself: two sources that label it, or the data and a model's head.
- `HEAD_FIELDS` (loss weight, pooling, dropout, hidden layer, target scaling, loss options) say how a head
  is built, weighed and trained. Two
  sources that describe one head of a new model must not disagree on them (the model would silently take
  one); data given to an existing model need not repeat them (the model's own head stands).
- A regression task's target statistics are pooled where sources share it (each source computed its
  own over its rows); a model's own statistics stand against the data's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

from .errors import UserError
from .models.mtl_vit.configuration_mtl_vit import TASK_TYPES, TaskSpec

TARGET_FIELDS = ("type", "labels", "num_outputs")
HEAD_FIELDS = (
    "loss_weight",
    "pooling",
    "dropout",
    "hidden_size",
    "target_scaling",
    "label_smoothing",
    "class_weights",
    "pos_weight",
    "loss",
    "huber_delta",
)


def differences(first: TaskSpec, second: TaskSpec, *, heads: bool = False) -> list[str]:
    """The fields in which `second` differs from `first` (`TARGET_FIELDS`, and `HEAD_FIELDS` where `heads`);
    a head field that one of them leaves unset (None) does not count."""
    fields = TARGET_FIELDS + (HEAD_FIELDS if heads else ())
    found = []
    for field in fields:
        mine, theirs = getattr(first, field), getattr(second, field)
        if field in HEAD_FIELDS and (mine is None or theirs is None):
            continue
        if mine != theirs:
            found.append(field)
    return found


def describe(spec: TaskSpec, fields: Sequence[str]) -> str:
    return ", ".join(f"{field}={getattr(spec, field)!r}" for field in fields)


def check_agreement(
    first: TaskSpec, first_origin: str, second: TaskSpec, second_origin: str, *, fix: str, heads: bool = False
) -> None:
    """Raises `UserError` when `second` (from `second_origin`) describes task `first.name` otherwise than
    `first` (from `first_origin`); `fix` says what to do about it."""
    found = differences(first, second, heads=heads)
    if found:
        raise UserError(
            f"task {first.name!r} differs between {first_origin} ({describe(first, found)}) and {second_origin} "
            f"({describe(second, found)}): {fix}"
        )


def merge_task_specs(described: Iterable[tuple[str, Sequence[TaskSpec]]]) -> list[TaskSpec]:
    """Each task once, in the order first seen, from `(origin, specs)` pairs (a source's name and its tasks);
    a task described twice must agree on its targets and its head."""
    merged: dict[str, tuple[TaskSpec, str]] = {}
    for origin, specs in described:
        for spec in specs:
            if spec.name in merged:
                first, first_origin = merged[spec.name]
                check_agreement(
                    first,
                    f"source {first_origin!r}",
                    spec,
                    f"source {origin!r}",
                    heads=True,
                    fix="sources that share a task must describe it alike; give the task the same "
                    "labels and options in each",
                )
                first.target_statistics = pooled_statistics(first.target_statistics, spec.target_statistics)
            else:
                merged[spec.name] = (dataclasses.replace(spec), origin)  # a copy: statistics get pooled in it
    return [spec for spec, _ in merged.values()]


def pooled_statistics(first: dict | None, second: dict | None) -> dict | None:
    """The mean, std and count of two sets of rows' regression targets, from each set's own."""
    if first is None or second is None:
        return first or second
    n1, n2 = first["count"], second["count"]
    count = n1 + n2
    mean = [(n1 * m1 + n2 * m2) / count for m1, m2 in zip(first["mean"], second["mean"], strict=True)]
    second_moments = [
        (n1 * (s1**2 + m1**2) + n2 * (s2**2 + m2**2)) / count
        for m1, s1, m2, s2 in zip(first["mean"], first["std"], second["mean"], second["std"], strict=True)
    ]
    std = [max(moment - m**2, 0.0) ** 0.5 or 1.0 for moment, m in zip(second_moments, mean, strict=True)]
    return {"mean": mean, "std": std, "count": count}


__all__ = [
    "HEAD_FIELDS",
    "TARGET_FIELDS",
    "TASK_TYPES",
    "check_agreement",
    "differences",
    "merge_task_specs",
    "pooled_statistics",
]
