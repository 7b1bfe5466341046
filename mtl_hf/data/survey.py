"""A first look at a shop's catalogue table, as `mtl-hf init` writes a recipe from it: each task's type and labels
read as training will read them, how often each label occurs, the blank cells, and the photos that are not there.

A text column whose cells hold the multilabel separator (`sale|new`) is taken for a multilabel task; a column of
whole numbers is a classification task (the table rule of `data/tables.py`), flagged when it has so many values
that it looks like a quantity.
"""

from __future__ import annotations

import math
import os
import random
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datasets import Dataset, Value

from ..errors import MissingPathError, UserError
from ..models.mtl_vit.tasks_mtl_vit import TaskSpec
from .columns import cell_names
from .encoding import CellRules
from .images import DECODE_ERRORS, decode_image
from .sources import SourceContext, TaskSource
from .tables import (
    DEFAULT_SPLITS,
    SPLIT_COLUMN,
    in_split_order,
    is_csv,
    is_table,
    photo_location,
    read_table,
    split_assignment,
)

MANY_WHOLE_NUMBER_LABELS = 20
"""A whole-number column with more distinct values than this is flagged: a quantity read as classes?"""
RARE_LABEL_ROWS = 5
"""A label on fewer rows than this is flagged: too few examples to learn it, or to score it."""


@dataclass
class TaskSurvey:
    """One task of the catalogue: its spec as training reads it, and what its cells hold."""

    spec: TaskSpec
    column: str
    blank: int
    label_counts: Counter = field(default_factory=Counter)
    train_label_counts: Counter = field(default_factory=Counter)
    """Rows per label in the train split alone (what the model will learn from; missing photos included)."""
    notes: list[str] = field(default_factory=list)

    def rows_per_label(self) -> tuple[int, float]:
        """(the fewest, the median) training rows of a label, over every label of the task (0 for an absent one)."""
        counts = sorted(self.train_label_counts[label] for label in self.spec.labels)
        middle = len(counts) // 2
        median = counts[middle] if len(counts) % 2 else (counts[middle - 1] + counts[middle]) / 2
        return counts[0], median


@dataclass
class CatalogueSurvey:
    """The table's rows, its tasks, and the photo paths that lead nowhere."""

    path: Path
    rows: int
    tasks: list[TaskSurvey]
    missing_photos: list[str]
    """Resolved paths of photos that do not exist (all of them; the first few are shown)."""
    photos_present: int
    """Local photo paths that exist (URLs and embedded bytes are checked when training decodes them)."""
    photos_checked: int
    """How many of those were decoded: all of them, or a random sample of `decode_limit`."""
    unreadable_photos: list[str]
    """Those of them that did not decode: truncated files, error pages saved as .jpg ..."""
    split_rows: dict[str, int]
    """Rows per split, as training will split them: by the table's `split` column, else by the hash of the id."""
    split_rule: str

    @property
    def sampled(self) -> bool:
        return self.photos_checked < self.photos_present

    def bad_photo_share(self, *, upper: bool = False) -> float:
        """The share of rows whose photo is missing or broken: all the missing ones, and the broken ones as
        checked (`upper`: with a sample, the 95% upper bound of its share, Wilson's interval)."""
        broken = len(self.unreadable_photos) / max(self.photos_checked, 1)
        if upper and self.sampled:
            broken = wilson_upper_bound(len(self.unreadable_photos), self.photos_checked)
        return (len(self.missing_photos) + broken * self.photos_present) / max(self.rows, 1)


def wilson_upper_bound(successes: int, trials: int, z: float = 1.96) -> float:
    """The upper end of Wilson's score interval for a proportion (95% by default)."""
    if trials == 0:
        return 1.0
    share = successes / trials
    centre = share + z * z / (2 * trials)
    spread = z * math.sqrt(share * (1 - share) / trials + z * z / (4 * trials * trials))
    return min(1.0, (centre + spread) / (1 + z * z / trials))


def survey_catalogue(
    path: str | Path,
    tasks: dict[str, str | None],
    *,
    image_column: str,
    id_column: str | None = None,
    separator: str = "|",
    decode_limit: int = 20_000,
    seed: int = 0,
) -> CatalogueSurvey:
    """Every row of the table at `path`, read for `tasks` (column -> type, None to infer); rows are split by the
    hash of `id_column` (default: the photo path) unless the table has a `split` column. Every photo that exists
    is decoded (a progress bar on a terminal), or, past `decode_limit` photos, a random sample of that many (seeded):
    a table whose photos are all missing or broken is refused."""
    path = Path(path)
    if is_table(path):
        rows = read_table(path)
    elif path.suffix == ".parquet" and path.is_file():
        rows = Dataset.from_parquet(str(path))
    elif path.suffix == ".parquet":
        raise MissingPathError(f"no catalogue table at {path}")
    else:
        raise UserError(f"{path}: init reads a catalogue table (.csv, .tsv, .jsonl) or a Parquet file")
    columns = rows.column_names
    missing = [
        column for column in [image_column, *tasks, *([id_column] if id_column else [])] if column not in columns
    ]
    if missing:
        raise UserError(f"{path}: no column {missing[0]!r}; the columns are {columns}")
    options = {}
    for task, task_type in tasks.items():
        task_type = task_type or _guess_multilabel(rows, task, separator)
        options[task] = {"column": task, **({"type": task_type} if task_type else {})}
    base_folder = str(path.resolve().parent)
    rules = CellRules(separator, nulls_are_empty=is_csv(path))
    source = TaskSource(rows, options, image_column=image_column, context=SourceContext(base_folder, None, rules, True))
    key_column = id_column or image_column
    assigned, _ = split_assignment(rows, key_column=key_column, fractions=DEFAULT_SPLITS, where=str(path))
    training = [index for index, split in enumerate(assigned) if split == "train"]
    surveys = [_task_survey(rows, spec, separator, training) for spec in source.task_specs]
    missing, present = _photo_paths(rows[image_column], base_folder)
    checked = present if len(present) <= decode_limit else sorted(random.Random(seed).sample(present, decode_limit))
    unreadable = [photo for photo in _progress(checked) if not _decodes(photo)]
    if len(missing) + len(present) == len(rows) and len(unreadable) == len(checked):
        example = (unreadable or missing)[0]
        raise UserError(
            f"{path}: none of the photos in {image_column!r} can be read ({len(missing)} not found, "
            f"{len(unreadable)} of {len(checked)} checked do not decode, e.g. {example}): check --image_column and "
            "the paths, which are read from the table's folder"
        )
    if SPLIT_COLUMN in columns:
        rule = f"by the table's {SPLIT_COLUMN!r} column"
    else:
        shares = ", ".join(f"{name} {share:.0%}" for name, share in DEFAULT_SPLITS.items())
        rule = f"by a hash of each row's {key_column!r} ({shares})"
    return CatalogueSurvey(
        path=path,
        rows=len(rows),
        tasks=surveys,
        missing_photos=missing,
        photos_present=len(present),
        photos_checked=len(checked),
        unreadable_photos=unreadable,
        split_rows=in_split_order(Counter(value for value in assigned if value)),
        split_rule=rule,
    )


def _guess_multilabel(rows: Dataset, column: str, separator: str) -> str | None:
    """'multilabel' for a text column some of whose cells hold the separator; None to let the data decide."""
    feature = rows.features[column]
    if isinstance(feature, Value) and feature.dtype in ("string", "large_string"):
        if any(value is not None and separator in value for value in rows[column]):
            return "multilabel"
    return None


def _task_survey(rows: Dataset, spec: TaskSpec, separator: str, training: list[int]) -> TaskSurvey:
    values = rows[spec.name]
    blank = sum(1 for value in values if value is None or (isinstance(value, str) and not value.strip()))
    survey = TaskSurvey(spec, spec.name, blank)
    if spec.type == "regression":
        return survey
    cut = separator if spec.type == "multilabel" else None
    names = [cell_names(value, cut) or [] for value in values]
    for labels in names:
        survey.label_counts.update(labels)
    for index in training:
        survey.train_label_counts.update(names[index])
    rare = sorted(label for label in spec.labels if survey.label_counts[label] < RARE_LABEL_ROWS)
    if rare:
        survey.notes.append(f"task {spec.name!r}: label(s) {rare} on fewer than {RARE_LABEL_ROWS} rows each")
    feature = rows.features[spec.name]
    whole_numbers = isinstance(feature, Value) and feature.dtype.startswith(("int", "uint"))
    if whole_numbers and len(spec.labels) > MANY_WHOLE_NUMBER_LABELS:
        survey.notes.append(
            f"column {spec.name!r} holds whole numbers, read as {len(spec.labels)} classes; if it is a quantity, "
            "make the task `type: regression`"
        )
    return survey


def _photo_paths(paths: list[Any], base_folder: str | None) -> tuple[list[str], list[str]]:
    """(missing, present): the resolved local photo paths that do not exist, and those that do."""
    missing, present = [], []
    for value in paths:
        if not isinstance(value, str) or not value or "://" in value:
            continue  # bytes, or a URL: checked when decoded
        resolved = photo_location(value, base_folder)
        (present if os.path.exists(resolved) else missing).append(os.path.normpath(resolved))
    return missing, present


def _progress(photos: list[str]):
    from tqdm.auto import tqdm

    # disable=None: shown on a terminal, silent in logs and pipes.
    return tqdm(photos, desc="decoding photos", unit="photo", file=sys.stderr, disable=None, leave=False)


def _decodes(path: str) -> bool:
    try:
        decode_image(path, draft=lambda width, height: (64, 64))
    except DECODE_ERRORS:
        return False
    return True


__all__ = [
    "CatalogueSurvey",
    "MANY_WHOLE_NUMBER_LABELS",
    "RARE_LABEL_ROWS",
    "TaskSurvey",
    "survey_catalogue",
    "wilson_upper_bound",
]
