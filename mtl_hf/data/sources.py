"""Task sources: where each task's images and labels come from.

A `TaskSource` is one dataset with an image column and one label column per task. The shop's
photo table with a category, a colour and a tag column is one source with three tasks (joint);
one dataset per task is one source per task (disjoint); a mixture can hold both.

The source turns each row into the model's conventions (class id or -100, multi-hot or -100,
float or NaN) and leaves the image undecoded, so that rows stay cheap until a DataLoader worker
decodes them.
"""

from __future__ import annotations

import atexit
import copy
import math
import os
import re
import weakref
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import datasets
import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, IterableDataset, IterableDatasetDict, List, Value
from datasets.distributed import split_dataset_by_node
from datasets.features import Image as ImageFeature
from datasets.features import LargeList
from datasets.features import Sequence as SequenceFeature

from ..models.mtl_vit.configuration_mtl_vit import TaskSpec
from ..models.mtl_vit.modeling_mtl_vit import MISSING_CLASS

_SPEC_FIELDS = {f.name for f in fields(TaskSpec)} - {"name"}
_FLOAT_DTYPES = {"float16", "float32", "float64", "bfloat16"}
_INT_DTYPES = {"int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"}
_IMAGE_VALUE_DTYPES = {"string", "large_string", "binary", "large_binary"}


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
            Parquet file or folder of Parquet files, an image folder (one sub-folder per class), an
            fsspec URL of a Parquet file or folder in object storage (`s3://shop/shards`, `gs://...`;
            see `storage_options`), or else a Hub dataset id, read with `datasets.load_dataset`.
        tasks (`list[str]` or `dict[str, str | dict]`):
            The tasks. A list names label columns that become tasks of the same name. A dict maps a
            task name to its label column, or to a dict with `column` and any [`TaskSpec`] field
            (`type`, `labels`, `num_outputs`, `loss_weight`, `pooling`, `dropout`, `hidden_size`).
            The type and labels come from the column's features where they can: `ClassLabel` gives a
            classification task with its names, a list of `ClassLabel` a multilabel task, a float
            column a regression task; string columns need `labels` unless the data is map-style.
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
    ):
        self.description = description
        self.bad_image_policy = check_bad_image_policy(bad_image_policy)
        self.storage_options = dict(storage_options or {})
        self.dataset, parquet_files = _load(
            data, split=split, streaming=streaming, storage_options=self.storage_options
        )
        # A Hub dataset id, for model cards; local data and object storage have none.
        self.hub_id = str(data) if isinstance(data, str) and not (Path(data).exists() or is_url(data)) else None
        self.image_column = image_column
        task_columns = _normalise_tasks(tasks)
        self.name = name or (next(iter(task_columns)) if len(task_columns) == 1 else "+".join(task_columns))
        where = f"source {self.name!r}"

        features = self.dataset.features
        if features is not None:
            columns = list(features)
            missing = [c for c in [image_column, *(t["column"] for t in task_columns.values())] if c not in columns]
            if missing:
                raise ValueError(f"{where}: no column {missing[0]!r}; the columns are {columns}")
            _check_image_feature(features[image_column], image_column, where)

        self._columns = {task: options["column"] for task, options in task_columns.items()}
        self._encoders = {
            task: _TaskEncoder.build(task, options, features, self.dataset, where)
            for task, options in task_columns.items()
        }
        self.task_specs = [encoder.spec for encoder in self._encoders.values()]

        keep = [image_column, *dict.fromkeys(self._columns.values())]
        self.dataset = self.dataset.select_columns(keep)
        if features is not None and isinstance(features[image_column], ImageFeature):
            # Rows travel as bytes; the collator decodes them in the DataLoader workers.
            self.dataset = self.dataset.cast_column(image_column, ImageFeature(decode=False))

        self.num_rows = self._count_rows(num_rows, parquet_files, split)
        if self.num_rows == 0:
            raise ValueError(f"{where} is empty: it has no rows to train on")
        if row_numbers is not None and (self.is_streaming or len(row_numbers) != self.num_rows):
            raise ValueError(f"{where}: row_numbers needs one number per row of a map-style dataset "
                             f"({self.num_rows} rows), got {len(row_numbers)}")  # fmt: skip
        self._row_numbers = None if row_numbers is None else np.asarray(row_numbers, dtype=np.int64)

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

    def fixed_tasks(self, task_names: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
        """This source's tasks (or `task_names` of them) as `tasks=` options, labels included, so that
        another split or selection encodes labels exactly as this source does."""
        specs = {spec.name: spec for spec in self.task_specs}
        return {task: task_options(specs[task], self._columns[task]) for task in (task_names or specs)}

    def derived(
        self,
        dataset: Any,
        *,
        task_names: Sequence[str] | None = None,
        name: str | None = None,
        num_rows: int | None = None,
        row_numbers: Sequence[int] | None = None,
    ) -> TaskSource:
        """A source over `dataset` (these rows, or a selection of them) with this source's tasks (or
        `task_names` of them), labels, image column, description and bad_image_policy."""
        return TaskSource(dataset, self.fixed_tasks(task_names), name=name or self.name,
                          image_column=self.image_column, num_rows=num_rows, description=self.description,
                          bad_image_policy=self.bad_image_policy, row_numbers=row_numbers)  # fmt: skip

    def with_tasks(self, task_names: Sequence[str], *, name: str | None = None) -> TaskSource:
        """The same rows labelling only `task_names` (with this source's labels), e.g. for a single-task baseline."""
        unknown = [task for task in task_names if task not in self._columns]
        if unknown:
            raise ValueError(f"source {self.name!r} has no task(s) {unknown}; its tasks are {self.task_names}")
        return self.derived(self.dataset, task_names=task_names, name=name,
                            num_rows=self.num_rows if self.is_streaming else None,
                            row_numbers=self._row_numbers)  # fmt: skip

    def rows(self, indices: Sequence[int]) -> list[RawExample]:
        """The rows at `indices` of a map-style source, encoded."""
        batch = self.dataset[list(indices)]
        numbers = indices if self._row_numbers is None else self._row_numbers[list(indices)].tolist()
        return [self.example({key: values[i] for key, values in batch.items()}, row) for i, row in enumerate(numbers)]

    def stream(self, *, seed: int, rank: int, world_size: int, shuffle: bool, buffer_size: int) -> Iterator[dict]:
        """This rank's share of a streaming source's rows, raw, in a seeded shuffled order.

        The shuffle is the usual one for streams - shard order, then a bounded buffer - done here
        on one shard at a time: `IterableDataset.shuffle` reads shards in threads, and datasets
        then waits seconds for them at the end of every pass.
        """
        dataset = self.dataset
        if world_size > 1:
            dataset = split_dataset_by_node(dataset, rank=rank, world_size=world_size)
        if not shuffle:
            return _closed_at_exit(_rows(dataset))
        rng = np.random.default_rng(seed)
        shard_order = rng.permutation(dataset.num_shards).tolist()
        rows = (row for shard in shard_order for row in _rows(dataset.shard(dataset.num_shards, shard)))
        return _closed_at_exit(_buffer_shuffled(rows, buffer_size, rng))

    def example(self, row: Mapping[str, Any], index: int | str) -> RawExample:
        labels = {}
        for task, encoder in self._encoders.items():
            try:
                labels[task] = encoder.encode(row[self._columns[task]])
            except ValueError as error:
                raise ValueError(f"source {self.name!r}, row {index}: {error}") from None
        return RawExample(image=row[self.image_column], labels=labels, source=self.name, row=index,
                          skip_if_undecodable=self.bad_image_policy == "skip")  # fmt: skip

    def _count_rows(self, num_rows: int | None, parquet_files: list[str], split: str) -> int | None:
        if not self.is_streaming:
            if num_rows is not None and num_rows != len(self.dataset):
                raise ValueError(f"source {self.name!r}: num_rows={num_rows} but the dataset has {len(self.dataset)}")
            return len(self.dataset)
        if num_rows is not None:
            if not isinstance(num_rows, int) or num_rows < 0:
                raise ValueError(f"source {self.name!r}: num_rows must be a non-negative integer, got {num_rows!r}")
            return num_rows
        if parquet_files:
            import fsspec
            import pyarrow.parquet as pq

            def footer_rows(path: str) -> int:  # reads the file's footer only, also in object storage
                with fsspec.open(path, "rb", **(self.storage_options if is_url(path) else {})) as file:
                    return pq.ParquetFile(file).metadata.num_rows

            return sum(footer_rows(path) for path in parquet_files)
        splits = self.dataset.info.splits if self.dataset.info is not None else None
        if splits and split in splits and splits[split].num_examples:
            return splits[split].num_examples
        return None

    def __repr__(self) -> str:
        kind = "streaming" if self.is_streaming else "map-style"
        return f"TaskSource({self.name!r}, {kind}, rows={self.num_rows}, tasks={self.task_names})"


_open_streams: weakref.WeakSet = weakref.WeakSet()


def _closed_at_exit(stream: Iterator[dict]) -> Iterator[dict]:
    _open_streams.add(stream)
    return stream


@atexit.register
def _close_open_streams() -> None:
    # A stream still half-read at exit would otherwise be closed during interpreter teardown, when
    # datasets' Parquet reader finds `pyarrow` already gone and prints "Exception ignored in ...".
    for stream in list(_open_streams):
        stream.close()


BAD_IMAGE_POLICIES = ("raise", "skip")


def check_bad_image_policy(policy: str) -> str:
    if policy not in BAD_IMAGE_POLICIES:
        raise ValueError(f"unknown bad_image_policy {policy!r}; use one of {', '.join(BAD_IMAGE_POLICIES)}")
    return policy


def _rows(dataset: IterableDataset, chunk: int = 256) -> Iterator[dict]:
    # Reading in chunks keeps the per-row cost of datasets' formatting low.
    for batch in dataset.iter(batch_size=chunk):
        columns = list(batch)
        for values in zip(*batch.values(), strict=True):
            yield dict(zip(columns, values, strict=True))


def _buffer_shuffled(rows: Iterator[dict], buffer_size: int, rng: np.random.Generator) -> Iterator[dict]:
    buffer: list[dict] = []
    for row in rows:
        if len(buffer) < buffer_size:
            buffer.append(row)
            continue
        slot = int(rng.integers(buffer_size))
        yield buffer[slot]
        buffer[slot] = row
    for slot in rng.permutation(len(buffer)):
        yield buffer[slot]


def _normalise_tasks(tasks) -> dict[str, dict[str, Any]]:
    if isinstance(tasks, str):
        tasks = [tasks]
    if isinstance(tasks, Mapping):
        items = tasks.items()
    elif isinstance(tasks, Sequence):
        bad = [column for column in tasks if not isinstance(column, str)]
        if bad:
            raise TypeError(f"a list of tasks holds label column names, got {bad[0]!r}; use a dict for options")
        items = [(column, column) for column in tasks]
    else:
        raise TypeError(f"tasks must be a list of label columns or a dict task -> column, got {type(tasks).__name__}")
    normalised = {}
    for task, options in items:
        options = {"column": options} if isinstance(options, str) else dict(options)
        options.setdefault("column", task)
        unknown = sorted(set(options) - _SPEC_FIELDS - {"column"})
        if unknown:
            raise ValueError(f"task {task!r}: unknown options {unknown}; use 'column' and TaskSpec fields")
        normalised[task] = options
    if not normalised:
        raise ValueError("a source needs at least one task (a label column)")
    return normalised


def task_options(spec: TaskSpec, column: str) -> dict[str, Any]:
    """A `tasks` entry that reads `column` as `spec` says (labels included), e.g. for another split."""
    options = {key: value for key, value in spec.to_dict().items() if key != "name"}
    if spec.type != "regression":
        options.pop("num_outputs")  # follows from the labels
    return {"column": column, **options}


def load_split(data: Any, *, split: str = "train", streaming: bool = False) -> Dataset | IterableDataset:
    """One split of a dataset given as a local path (dataset folder, Parquet, image folder) or a Hub id."""
    return _load(data, split=split, streaming=streaming)[0]


def is_url(data: Any) -> bool:
    """An fsspec URL of object storage (`s3://`, `gs://`, `az://`, ...), not a local path or a Hub id."""
    return (
        isinstance(data, str)
        and re.match(r"^[a-z][a-z0-9+.-]*://", data) is not None
        and not data.startswith(("file://", "hf://"))
    )


def _load_url(url: str, *, split: str, streaming: bool, storage_options: dict[str, Any]):
    """The Parquet file, or every Parquet file under the folder, at an object-storage URL."""
    import fsspec
    from huggingface_hub.errors import OfflineModeIsEnabled

    fs, root = fsspec.core.url_to_fs(url, **storage_options)
    if root.endswith(".parquet") and fs.isfile(root):
        paths = [root]
    else:
        paths = sorted(fs.glob(f"{root.rstrip('/')}/**/*.parquet"))
    if not paths:
        raise FileNotFoundError(f"no Parquet files at {url} (a URL source is a Parquet file or a folder of them)")
    if split != "train":
        raise ValueError(f"{url}: Parquet files in object storage form one split, 'train'; got split={split!r} "
                         "(give the evaluation shards as their own source, or hold out eval_fraction)")  # fmt: skip
    files = [fs.unstrip_protocol(path) for path in paths]
    try:
        # A copy: datasets adds its own entries (an "hf" key) to the options it is given.
        loaded = datasets.load_dataset("parquet", data_files=files, split="train", streaming=streaming,
                                       storage_options=copy.deepcopy(storage_options))  # fmt: skip
    except OfflineModeIsEnabled:
        raise ConnectionError(
            f"{url}: datasets' offline mode (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE) refuses to copy object storage "
            "into its cache: stream the source (streaming: true) or unset it"
        ) from None
    return loaded, files


def _load(
    data: Any, *, split: str, streaming: bool, storage_options: dict[str, Any] | None = None
) -> tuple[Dataset | IterableDataset, list[str]]:
    if isinstance(data, (DatasetDict, IterableDatasetDict)):
        if split not in data:
            raise ValueError(f"no split {split!r} in the dataset; its splits are {list(data)}")
        return data[split], []
    if isinstance(data, (Dataset, IterableDataset)):
        return data, []
    if not isinstance(data, (str, os.PathLike)):
        raise TypeError(
            f"a task source must be a datasets Dataset / IterableDataset / DatasetDict, a local path or a "
            f"Hub id; got {type(data).__name__}"
        )
    if is_url(data):
        return _load_url(str(data), split=split, streaming=streaming, storage_options=storage_options or {})
    path = Path(data)
    if path.is_dir() and ((path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()):
        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, DatasetDict):
            loaded = _load(loaded, split=split, streaming=False)[0]
        return (loaded.to_iterable_dataset() if streaming else loaded), []
    parquet_files = sorted(str(p) for p in path.rglob("*.parquet")) if path.is_dir() else []
    if path.suffix == ".parquet" and path.is_file():
        parquet_files = [str(path)]
    if parquet_files:
        loaded = datasets.load_dataset("parquet", data_files=parquet_files, split="train", streaming=streaming)
        return loaded, parquet_files
    if path.is_dir():
        return datasets.load_dataset("imagefolder", data_dir=str(path), split=split, streaming=streaming), []
    if path.exists():
        raise ValueError(f"{path}: not a dataset folder, a Parquet file or an image folder")
    require_path_or_hub_id(str(data), "data")
    return datasets.load_dataset(str(data), split=split, streaming=streaming), []


def require_path_or_hub_id(name: str, kind: str, *, where: str = "") -> None:
    """Refuses `name` when no such local path exists and it is not `owner/name`, the only form tried on the Hub.

    So a typo in a local path fails at once with one line, instead of retrying the Hub.
    """
    if not Path(name).exists() and re.fullmatch(r"[\w-][\w.-]*/[\w-][\w.-]*", name) is None:
        raise FileNotFoundError(f"{where}no {kind} at {name} (tried as a local path; a Hub id has the form owner/name)")


def _check_image_feature(feature: Any, column: str, where: str) -> None:
    if isinstance(feature, ImageFeature):
        return
    if isinstance(feature, Value) and feature.dtype in _IMAGE_VALUE_DTYPES:
        return  # file paths or encoded bytes
    if isinstance(feature, (List, LargeList, SequenceFeature)) or type(feature).__name__.startswith("Array"):
        return  # pixel arrays
    raise TypeError(
        f"{where}: image column {column!r} holds {_describe(feature)}, not images; set image_column to the "
        "column with the images (an Image feature, file paths, bytes or pixel arrays)"
    )


def _describe(feature: Any) -> str:
    if isinstance(feature, Value):
        return f"{feature.dtype} values"
    return type(feature).__name__


@dataclass
class _TaskEncoder:
    """Turns one column's values into the model's target conventions for one task."""

    spec: TaskSpec
    ids_are_given: bool  # column values are class ids (ClassLabel / int) rather than names

    @classmethod
    def build(cls, task: str, options: dict, features, dataset, where: str) -> _TaskEncoder:
        column = options["column"]
        spec_fields = {key: value for key, value in options.items() if key != "column"}
        feature = features[column] if features is not None else None
        inner = getattr(feature, "feature", None)
        inferred: dict[str, Any] = {}
        ids_are_given = False
        if isinstance(feature, ClassLabel):
            inferred = {"type": "classification", "labels": list(feature.names)}
            ids_are_given = True
        elif isinstance(inner, ClassLabel):
            inferred = {"type": "multilabel", "labels": list(inner.names)}
            ids_are_given = True
        elif isinstance(feature, Value) and feature.dtype in _FLOAT_DTYPES:
            inferred = {"type": "regression", "num_outputs": 1}
        elif isinstance(inner, Value) and inner.dtype in _FLOAT_DTYPES and getattr(feature, "length", -1) > 0:
            inferred = {"type": "regression", "num_outputs": feature.length}
        elif isinstance(feature, Value) and feature.dtype in _INT_DTYPES:
            ids_are_given = True
            if spec_fields.get("type") in (None, "multilabel"):
                raise ValueError(
                    f"{where}: column {column!r} holds {feature.dtype} values with no class names: give its "
                    f"type and labels (e.g. tasks={{{task!r}: {{'type': 'classification', 'labels': [...]}}}}), "
                    "or cast the column to ClassLabel"
                )
        elif isinstance(inner, Value) and inner.dtype in _INT_DTYPES:
            ids_are_given = True
            inferred = {"type": "multilabel"}
        elif isinstance(feature, Value) and feature.dtype in ("string", "large_string"):
            inferred = {"type": "classification"}
        elif isinstance(inner, Value) and inner.dtype in ("string", "large_string"):
            inferred = {"type": "multilabel"}
        elif feature is not None:
            raise TypeError(
                f"{where}: column {column!r} holds {_describe(feature)}, which is not a label column "
                "(ClassLabel, a list of ClassLabel, strings, numbers)"
            )

        for key in ("type", "labels"):
            given, found = spec_fields.get(key), inferred.get(key)
            if given is not None and found is not None and given != found:
                raise ValueError(
                    f"{where}: task {task!r} gives {key}={given!r} but column {column!r} has {key} {found!r}; "
                    f"drop {key!r} from the task (it comes from the data) or cast the column"
                )
        spec_fields = {**inferred, **spec_fields}
        if spec_fields.get("type") in ("classification", "multilabel") and spec_fields.get("labels") is None:
            if ids_are_given and "num_outputs" not in spec_fields:
                raise ValueError(
                    f"{where}: task {task!r}: column {column!r} holds class ids with no class names; give the "
                    "task's labels (or num_outputs), or cast the column to ClassLabel"
                )
            if "num_outputs" not in spec_fields:
                if isinstance(dataset, IterableDataset) or feature is None:
                    raise ValueError(
                        f"{where}: task {task!r} needs its labels (class names): column {column!r} carries no "
                        "ClassLabel names and a streaming source cannot be scanned for them"
                    )
                spec_fields["labels"] = _distinct_names(dataset, column, spec_fields["type"] == "multilabel")
        if "type" not in spec_fields:
            raise ValueError(f"{where}: task {task!r} needs a type (classification, multilabel or regression)")
        return cls(spec=TaskSpec(name=task, **spec_fields), ids_are_given=ids_are_given)

    def encode(self, value: Any) -> Any:
        spec = self.spec
        if spec.type == "regression":
            return self._encode_regression(value)
        if spec.type == "classification":
            return MISSING_CLASS if value is None else self._class_id(value)
        if value is None:
            return [float(MISSING_CLASS)] * spec.num_outputs
        if isinstance(value, (str, int)):
            value = [value]
        multi_hot = [0.0] * spec.num_outputs
        for item in value:
            multi_hot[self._class_id(item)] = 1.0
        return multi_hot

    def _class_id(self, value: Any) -> int:
        spec = self.spec
        if isinstance(value, str):
            class_id = spec.label2id.get(value)
            if class_id is None:
                raise ValueError(f"task {spec.name!r}: label {value!r} is not among its labels {spec.labels}")
            return class_id
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"task {spec.name!r}: expected a class id or name, got {value!r}")
        if value == MISSING_CLASS:
            return value
        if not 0 <= value < spec.num_outputs:
            raise ValueError(f"task {spec.name!r}: label {value} out of range ({spec.num_outputs} labels)")
        return value

    def _encode_regression(self, value: Any) -> list[float]:
        size = self.spec.num_outputs
        if value is None:
            return [math.nan] * size
        values = list(value) if isinstance(value, (list, tuple)) else [value]
        if len(values) != size:
            raise ValueError(f"task {self.spec.name!r}: expected {size} values, got {len(values)}")
        try:
            return [math.nan if v is None else float(v) for v in values]
        except (TypeError, ValueError):
            raise ValueError(f"task {self.spec.name!r}: regression target {value!r} is not numeric") from None


def _distinct_names(dataset: Dataset, column: str, nested: bool) -> list[str]:
    values = dataset[column]
    if nested:
        values = [item for value in values if value is not None for item in value]
    return sorted({str(value) for value in values if value is not None})


__all__ = [
    "BAD_IMAGE_POLICIES",
    "RawExample",
    "TaskSource",
    "check_bad_image_policy",
    "is_url",
    "load_split",
    "task_options",
]
