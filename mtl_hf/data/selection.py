"""Sources derived from a source by selecting rows: a seeded held-out share for evaluation, and the first rows."""

from __future__ import annotations

import math

import numpy as np

from ..errors import UserError
from .sources import TaskSource


def hold_out(source: TaskSource, fraction: float, seed: int) -> tuple[TaskSource, TaskSource | None]:
    """(training rows, held-out rows) of a map-style `source`: a seeded `fraction` of its rows held out
    (None where `fraction` is 0). Rows keep their numbers in `source`, so errors name rows the user can find."""
    if not fraction:
        return source, None
    if source.is_streaming:
        raise UserError(
            f"source {source.name!r} is streamed, so no share of it can be held out for evaluation: set eval_split "
            "to a split of the data, or eval_fraction: 0 to evaluate nothing"
        )
    order = np.random.default_rng(seed).permutation(source.num_rows)
    held = math.ceil(source.num_rows * fraction)
    # Sorted rows read in order from the Arrow table (the mixture shuffles them); the training rows'
    # regression statistics are their own, and the held-out rows are standardised with them.
    train_rows, held_rows = np.sort(order[held:]), np.sort(order[:held])
    train = source.derived(source.dataset.select(train_rows), row_numbers=train_rows, fresh_statistics=True)
    held_out = train.derived(source.dataset.select(held_rows), name=f"{source.name}_eval", row_numbers=held_rows)
    return train, held_out


def first_rows(source: TaskSource, count: int, *, fresh_statistics: bool = False) -> TaskSource:
    """The first `count` rows of `source` (all of them where it has fewer); training rows take
    `fresh_statistics` (their regression targets' own)."""
    if source.is_streaming:
        rows, num_rows = source.dataset.take(count), min(count, source.num_rows or count)
    else:
        rows, num_rows = source.dataset.select(range(min(count, len(source.dataset)))), None
    row_numbers = None if source.is_streaming else source.row_numbers[: len(rows)]
    return source.derived(rows, num_rows=num_rows, row_numbers=row_numbers, fresh_statistics=fresh_statistics)


__all__ = ["first_rows", "hold_out"]
