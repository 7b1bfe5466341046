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

    def part(rows: np.ndarray, name: str) -> TaskSource:
        rows = np.sort(rows)  # sorted rows read in order from the Arrow table; the mixture shuffles them
        return source.derived(source.dataset.select(rows), name=name, row_numbers=rows)

    return part(order[held:], source.name), part(order[:held], f"{source.name}_eval")


def first_rows(source: TaskSource, count: int) -> TaskSource:
    """The first `count` rows of `source` (all of them where it has fewer)."""
    if source.is_streaming:
        rows, num_rows = source.dataset.take(count), min(count, source.num_rows or count)
    else:
        rows, num_rows = source.dataset.select(range(min(count, len(source.dataset)))), None
    row_numbers = None if source.is_streaming else source.row_numbers[: len(rows)]
    return source.derived(rows, num_rows=num_rows, row_numbers=row_numbers)


__all__ = ["first_rows", "hold_out"]
