"""The labelled rows a model did not train on, for the commands that check a model before they keep what they made
of it (the old-task gate of `add-task`, the precision gate of `export --quantize` and `--dtype bf16`).

The rows: `data` (its `split`), else the table the model recorded training on (config.training_data), its `split`.
Rows the model trained on are left out, recognised by their hashed keys, so that what is measured on them is
measured on photos the model has not seen.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass


@dataclass
class HeldOutRows:
    source: object  # a TaskSource of the model's tasks that the data has a column for, training rows left out
    description: str
    left_out: int
    unscored: list[str]  # the model's tasks the data has no column for


def held_out_rows(
    model_name: str,
    location: str,
    config,
    data: str | None,
    split: str,
    image_column: str | None = None,
    max_rows: int | None = None,
) -> HeldOutRows | None:
    """The held-out rows of `data` (or of the recorded table), or None when there are none to find (no `data`, and
    no table of the model's training that exists here). `image_column` None: the recorded table's (as training
    recorded it), else `image`."""
    from .evaluate import scored_source, without_training_rows

    recorded = _recorded_entry(config)
    if data is None and recorded is not None:
        data, image_column = recorded["data"], image_column or recorded.get("image_column")
    if data is None:
        return None
    args = argparse.Namespace(
        model=model_name,
        data=data,
        split=split,
        tasks=None,
        image_column=image_column or "image",
        id_column=None,
        max_rows=max_rows,
        bad_image_policy="skip",
        allow_training_rows=False,
        skip_training_rows=True,
    )
    source, rows, unscored = scored_source(args, config)
    source, _, left_out = without_training_rows(args, config, location, source, rows)
    return HeldOutRows(source, f"split {split!r} of {data}", left_out, unscored)


def recorded_table(config) -> str | None:
    """The table the model recorded training on, where it exists here."""
    entry = _recorded_entry(config)
    return None if entry is None else entry["data"]


def _recorded_entry(config) -> dict | None:
    for entry in config.training_data or ():
        if entry.get("split_by") and os.path.exists(entry.get("data", "")):
            return entry
    return None


__all__ = ["HeldOutRows", "held_out_rows", "recorded_table"]
