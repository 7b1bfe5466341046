"""Task sources: where each task's images and labels come from.

A `TaskSource` is one dataset with an image column and one label column per task. The shop's
photo table with a category, a colour and a tag column is one source with three tasks (joint);
one dataset per task is one source per task (disjoint); a mixture can hold both.

The source turns each row into the model's conventions (class id or -100, multi-hot or -100,
float or NaN) and leaves the image undecoded, so that rows stay cheap until a DataLoader worker
decodes them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from datasets import IterableDataset
from datasets.features import Image as ImageFeature

from ..errors import UserError
from ..models.mtl_vit.heads_mtl_vit import MISSING_CLASS
from ..utils.validation import check_choice
from .columns import check_image_feature, column_cells
from .encoding import UNKNOWN_LABELS, CellRules, TaskEncoder, normalise_tasks, task_options
from .locations import TableOptions, is_url, load_rows, parquet_row_count
from .streaming import stream_rows
from .tables import is_csv, is_table, photo_location

BAD_IMAGE_POLICIES = ("raise", "skip")


@dataclass(frozen=True)
class SourceContext:
    """What a source's location says about its rows, kept by every source derived from it (a held-out share,
    the first rows): where relative photo paths start, where the rows come from, how their cells read."""

    base_folder: str | None = None
    origin: dict[str, Any] | None = None
    rules: CellRules = CellRules()
    table: bool = False


@dataclass(frozen=True)
class RawExample:
    """One row on its way to the collator: an undecoded image, its targets, and where it came from."""

    image: Any
    labels: dict[str, Any]
    source: str
    row: int | str
    skip_if_undecodable: bool = False  # the source's bad_image_policy is "skip"


class TaskSource:
    r"""
    One dataset and the tasks it labels.

    Args:
        data (`Dataset`, `IterableDataset`, `DatasetDict`, `IterableDatasetDict`, `str` or `Path`):
            The rows. A dict of splits gives `split`. A string or path is a `save_to_disk` folder, a
            Parquet file or folder of Parquet files (split by their names, as `mtl-hf prepare` writes
            them), a catalogue table (`.csv`, `.tsv`, `.jsonl`: one row per product, photo paths relative
            to the table; see `data/tables.py`), an image folder (one sub-folder per class), an fsspec URL
            of a Parquet file or folder in object storage (`s3://shop/shards`, `gs://...`; see
            `storage_options`), or else a Hub dataset id, read with `datasets.load_dataset`.
        tasks (`list[str]` or `dict[str, str | dict]`):
            The tasks. A list names label columns that become tasks of the same name. A dict maps a
            task name to its label column, or to a dict with `column` and any [`TaskSpec`] field
            (`type`, `labels`, `num_outputs`, `loss_weight`, `pooling`, `dropout`, `hidden_size`,
            `target_scaling`), and `empty` for a multilabel task of a catalogue table (`"none"`, the default:
            an empty cell means none of the labels; `"missing"`: unknown). The type and labels come from the
            column where they can: `ClassLabel` gives a classification task with its names, a list of
            `ClassLabel` a multilabel task, a float column a regression task; text columns (and, in a
            catalogue table, whole numbers and booleans) give a classification task over their distinct
            values, which a streaming source needs given as `labels`.
        name (`str`, *optional*):
            The source's name in logs and errors. Defaults to its task's name when it has one task.
        image_column (`str`, *optional*, defaults to `"image"`):
            The column that holds the images (an `Image` feature, file paths, bytes or arrays).
        split (`str`, *optional*, defaults to `"train"`):
            The split to read when `data` has several.
        streaming (`bool`, *optional*, defaults to `False`):
            Read a path or Hub id as a streaming `IterableDataset` (rows read lazily, never all in
            memory).
        num_rows (`int`, *optional*):
            The number of rows, for a streaming source whose size the metadata does not give.
            Size-based mixing strategies and epochs need it.
        description (`str`, *optional*):
            What the rows are, in a few words, for model cards (e.g. "synthetic 32-px drawings").
        bad_image_policy (`str`, *optional*, defaults to `"raise"`):
            An image of this source that cannot be decoded (a truncated file, an error page saved as
            a photo): `"raise"` stops with an error naming the source, the row and the decoder's
            message; `"skip"` leaves the row out and counts it (see `max_bad_image_fraction`).
        storage_options (`dict`, *optional*):
            fsspec options for a URL `data`: credentials, endpoint, region (e.g. `{"key": ...,
            "secret": ..., "client_kwargs": {"endpoint_url": "http://127.0.0.1:9000"}}` for S3).
            A streaming source reads shards straight from the store; a map-style one is first
            copied into the datasets cache (which datasets' offline mode forbids).
        row_numbers (`Sequence[int]`, *optional*):
            When `data` is a selection of a larger map-style table (a held-out share), each row's
            number in that table, so that errors name the row the user can find. Defaults to the
            row's position in `data`.
        id_column (`str`, *optional*):
            A catalogue table's row id, whose hash assigns each row its split. Defaults to the image column.
        split_fractions (`dict[str, float]`, *optional*):
            A catalogue table's splits and their shares, defaults to `{"train": 0.8, "validation": 0.1,
            "test": 0.1}`; a `split` column in the table decides instead.
        separator (`str`, *optional*, defaults to `"|"`):
            What separates the labels of a multilabel text cell in a catalogue table (`sale|new`).
        unknown_labels (`str`, *optional*, defaults to `"error"`):
            A label the task does not know: `"error"` (training), or `"count"` (evaluation: the row is left
            out of the task's scores and counted in `unknown_labels()`).
    """

    def __init__(
        self,
        data: Any,
        tasks: Sequence[str] | Mapping[str, str | Mapping[str, Any]],
        *,
        name: str | None = None,
        image_column: str = "image",
        split: str = "train",
        streaming: bool = False,
        num_rows: int | None = None,
        description: str | None = None,
        bad_image_policy: str = "raise",
        row_numbers: Sequence[int] | None = None,
        storage_options: Mapping[str, Any] | None = None,
        id_column: str | None = None,
        split_fractions: Mapping[str, float] | None = None,
        separator: str = "|",
        unknown_labels: str = "error",
        context: SourceContext | None = None,
    ):
        self.description = description
        self.bad_image_policy = check_choice("bad_image_policy", bad_image_policy, BAD_IMAGE_POLICIES)
        self.storage_options = dict(storage_options or {})
        if split_fractions is not None and not is_table(data):
            raise UserError(
                f"split_fractions split a catalogue table (.csv, .tsv, .jsonl) by its rows' ids, not {data!r}, "
                "whose splits are its own"
            )
        table = TableOptions(key_column=id_column or image_column, fractions=split_fractions)
        loaded = load_rows(data, split=split, streaming=streaming, storage_options=self.storage_options, table=table)
        self.dataset = loaded.dataset
        # Local tables and Parquet files are read as `prepare` reads a catalogue (the rules of `data/tables.py`).
        catalogue = loaded.base_folder is not None
        self.context = context or SourceContext(
            base_folder=loaded.base_folder,
            origin=loaded.origin,
            rules=CellRules(separator if catalogue else None, nulls_are_empty=is_csv(data)),
            table=catalogue,
        )
        self.context = dataclasses.replace(
            self.context, rules=dataclasses.replace(self.context.rules, unknown_labels=unknown_labels)
        )
        check_choice("unknown_labels", unknown_labels, UNKNOWN_LABELS)
        # A Hub dataset id, for model cards; local data and object storage have none.
        self.hub_id = str(data) if isinstance(data, str) and not (Path(data).exists() or is_url(data)) else None
        self.image_column = image_column
        task_columns = normalise_tasks(tasks)
        self.name = name or (next(iter(task_columns)) if len(task_columns) == 1 else "+".join(task_columns))
        self._encoders = self._task_encoders(task_columns)
        self._columns = {task: options["column"] for task, options in task_columns.items()}
        self.task_specs = [encoder.spec for encoder in self._encoders.values()]

        features = self.dataset.features
        self.id_column = id_column if features is not None and id_column in features else None
        keep = list(
            dict.fromkeys([image_column, *([self.id_column] if self.id_column else []), *self._columns.values()])
        )
        self.dataset = self.dataset.select_columns(keep)
        if features is not None and isinstance(features[image_column], ImageFeature):
            # Rows travel as bytes; the collator decodes them in the DataLoader workers.
            self.dataset = self.dataset.cast_column(image_column, ImageFeature(decode=False))
        self.num_rows = self._count_rows(num_rows, loaded.parquet_files, split)
        if self.num_rows == 0:
            raise UserError(f"source {self.name!r} is empty: it has no rows to train on")
        if row_numbers is not None and (self.is_streaming or len(row_numbers) != self.num_rows):
            raise UserError(
                f"source {self.name!r}: row_numbers needs one number per row of a map-style dataset "
                f"({self.num_rows} rows), got {len(row_numbers)}"
            )
        self._row_numbers = None if row_numbers is None else np.asarray(row_numbers, dtype=np.int64)

    def _task_encoders(self, task_columns: dict[str, dict]) -> dict[str, TaskEncoder]:
        where = f"source {self.name!r}"
        features = self.dataset.features
        if features is not None:
            columns = list(features)
            wanted = [self.image_column, *(t["column"] for t in task_columns.values())]
            missing = [c for c in wanted if c not in columns]
            if missing:
                raise UserError(f"{where}: no column {missing[0]!r}; the columns are {columns}")
            check_image_feature(features[self.image_column], self.image_column, where)
        return {
            task: TaskEncoder.build(
                task, options, features, self.dataset, where, self.context.rules, self.context.table
            )
            for task, options in task_columns.items()
        }

    @property
    def is_streaming(self) -> bool:
        return isinstance(self.dataset, IterableDataset)

    @property
    def columns(self) -> dict[str, str]:
        """Task name -> the label column it reads."""
        return dict(self._columns)

    @property
    def task_names(self) -> list[str]:
        return [spec.name for spec in self.task_specs]

    @property
    def row_numbers(self) -> list[int]:
        """Each row's number in the table it was selected from (see `row_numbers` above)."""
        return self._row_numbers.tolist() if self._row_numbers is not None else list(range(self.num_rows))

    def fixed_tasks(self, task_names: Sequence[str] | None = None, *, statistics: bool = True) -> dict[str, dict]:
        """This source's tasks (or `task_names` of them) as `tasks=` options, labels included, so that
        another split or selection encodes labels exactly as this source does; without the regression
        targets' `statistics` where the other rows are to compute their own."""
        specs = {spec.name: spec for spec in self.task_specs}
        options = {task: task_options(specs[task], self._columns[task]) for task in (task_names or specs)}
        if not statistics:
            for task_options_ in options.values():
                task_options_.pop("target_statistics", None)
        return options

    def derived(
        self,
        dataset: Any,
        *,
        task_names: Sequence[str] | None = None,
        name: str | None = None,
        num_rows: int | None = None,
        row_numbers: Sequence[int] | None = None,
        fresh_statistics: bool = False,
    ) -> TaskSource:
        """A source over `dataset` (these rows, or a selection of them) with this source's tasks (or
        `task_names` of them), labels, image column, description and bad_image_policy; with
        `fresh_statistics`, its regression targets' statistics are computed anew from these rows (the
        rows a model will train on)."""
        return TaskSource(
            dataset,
            self.fixed_tasks(task_names, statistics=not fresh_statistics),
            name=name or self.name,
            image_column=self.image_column,
            num_rows=num_rows,
            description=self.description,
            bad_image_policy=self.bad_image_policy,
            row_numbers=row_numbers,
            id_column=self.id_column,
            unknown_labels=self.context.rules.unknown_labels,
            context=self.context,
        )

    def with_tasks(self, task_names: Sequence[str], *, name: str | None = None) -> TaskSource:
        """The same rows labelling only `task_names` (with this source's labels), e.g. for a single-task baseline."""
        unknown = [task for task in task_names if task not in self._columns]
        if unknown:
            raise UserError(f"source {self.name!r} has no task(s) {unknown}; its tasks are {self.task_names}")
        return self.derived(
            self.dataset,
            task_names=task_names,
            name=name,
            num_rows=self.num_rows if self.is_streaming else None,
            row_numbers=self._row_numbers,
        )

    def rows(self, indices: Sequence[int]) -> list[RawExample]:
        """The rows at `indices` of a map-style source, encoded."""
        batch = self.dataset[list(indices)]
        numbers = indices if self._row_numbers is None else self._row_numbers[list(indices)].tolist()
        return [self.example({key: values[i] for key, values in batch.items()}, row) for i, row in enumerate(numbers)]

    def stream(self, *, seed: int, rank: int, world_size: int, shuffle: bool, buffer_size: int) -> Iterator[dict]:
        """This rank's share of a streaming source's rows, raw, in a seeded shuffled order (`stream_rows`)."""
        return stream_rows(
            self.dataset, seed=seed, rank=rank, world_size=world_size, shuffle=shuffle, buffer_size=buffer_size
        )

    def example(self, row: Mapping[str, Any], index: int | str) -> RawExample:
        labels = {}
        for task, encoder in self._encoders.items():
            try:
                labels[task] = encoder.encode(row[self._columns[task]])
            except UserError as error:
                raise UserError(f"source {self.name!r}, row {index}: {error}") from None
        return RawExample(
            image=self._located(row[self.image_column]),
            labels=labels,
            source=self.name,
            row=index,
            skip_if_undecodable=self.bad_image_policy == "skip",
        )

    def label_counts(self, task: str) -> dict[str, Any]:
        """`{"counts": [...], "rows": n}`: how many of the `n` rows that label classification or multilabel
        `task` carry each of its labels (a streaming source: among its first `STATISTICS_STREAM_ROWS` rows)."""
        encoder = self._encoders[task]
        spec = encoder.spec
        if spec.type == "regression":
            raise ValueError(f"task {task!r} is a regression task: it has no labels to count")
        counts, rows = [0] * spec.num_outputs, 0
        for cell in column_cells(self.dataset, self._columns[task]):
            try:
                encoded = encoder.encode(cell)
            except UserError as error:
                raise UserError(f"source {self.name!r}: {error}") from None
            if spec.type == "classification":
                if encoded != MISSING_CLASS:
                    counts[encoded] += 1
                    rows += 1
            elif encoded[0] != MISSING_CLASS:
                rows += 1
                for label, value in enumerate(encoded):
                    counts[label] += value >= 0.5
        return {"counts": counts, "rows": rows}

    def unknown_labels(self) -> dict[str, dict[str, int]]:
        """Per task, the labels it does not know and the cells that held them (`unknown_labels="count"`), since
        the source was made or last reset."""
        return {task: dict(encoder.unknown) for task, encoder in self._encoders.items() if encoder.unknown}

    def rows_with_unknown_labels(self) -> dict[str, int]:
        """Per task, the rows left out of its scores for a label it does not know (see `unknown_labels`)."""
        return {task: encoder.rows_left_out for task, encoder in self._encoders.items() if encoder.rows_left_out}

    def reset_unknown_labels(self) -> None:
        """Starts the counts of `unknown_labels` afresh (each evaluation counts its own rows)."""
        for encoder in self._encoders.values():
            encoder.unknown.clear()
            encoder.rows_left_out = 0

    def _located(self, image: Any) -> Any:
        """A photo path relative to its catalogue table, as a path from here; other values as they are."""
        return photo_location(image, self.context.base_folder)

    def _count_rows(self, num_rows: int | None, parquet_files: list[str], split: str) -> int | None:
        if not self.is_streaming:
            if num_rows is not None and num_rows != len(self.dataset):
                raise UserError(f"source {self.name!r}: num_rows={num_rows} but the dataset has {len(self.dataset)}")
            return len(self.dataset)
        if num_rows is not None:
            if not isinstance(num_rows, int) or num_rows < 0:
                raise UserError(f"source {self.name!r}: num_rows must be a non-negative integer, got {num_rows!r}")
            return num_rows
        if parquet_files:
            return parquet_row_count(parquet_files, self.storage_options)
        splits = self.dataset.info.splits if self.dataset.info is not None else None
        if splits and split in splits and splits[split].num_examples:
            return splits[split].num_examples
        return None

    def __repr__(self) -> str:
        kind = "streaming" if self.is_streaming else "map-style"
        return f"TaskSource({self.name!r}, {kind}, rows={self.num_rows}, tasks={self.task_names})"


__all__ = ["BAD_IMAGE_POLICIES", "RawExample", "TaskSource", "task_options"]
