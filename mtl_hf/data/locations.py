"""Where a task source's rows come from: a datasets object, a local folder or Parquet file, a catalogue table
(CSV, JSON lines), an image folder, an object-storage URL (`s3://`, `gs://`, ...) or a Hub dataset id; which of
their splits is asked for; and how many rows a stream of Parquet shards holds."""

from __future__ import annotations

import copy
import json
import os
import posixpath
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
from datasets import Dataset, DatasetDict, IterableDataset, IterableDatasetDict

from ..errors import MissingPathError, UnreachableError, UserError
from ..hub.lookup import require_path_or_hub_id
from .tables import DEFAULT_SPLITS, SPLIT_COLUMN, is_table, read_table, select_split

# The split a Parquet file belongs to, from its name or folder (`train-00000-of-00004.parquet`,
# `validation/part-0.parquet`), as `mtl-hf prepare` and the Hub write them.
_SPLIT_IN_PATH = re.compile(r"(?:^|/)(train|validation|test)(?:[-_./]|$)")


@dataclass(frozen=True)
class LoadedRows:
    """A source's rows, and what else their location says about them."""

    dataset: Dataset | IterableDataset
    parquet_files: Sequence[str] = ()
    """The Parquet files they come from (a stream counts its rows from their footers)."""
    base_folder: str | None = None
    """A catalogue table's folder, from which relative photo paths are taken."""
    origin: dict[str, str] | None = None
    """`{"data": ..., "split": ...}`: the location and split of the rows, where they have one."""


@dataclass(frozen=True)
class TableOptions:
    """How a catalogue table's rows fall into splits (see `data/tables.py`)."""

    key_column: str = "image"
    fractions: Mapping[str, float] = None  # DEFAULT_SPLITS

    def fractions_or_default(self) -> Mapping[str, float]:
        return self.fractions or DEFAULT_SPLITS

    def rule(self, columns: Sequence[str]) -> dict[str, Any]:
        """How a table with `columns` is split, as a model records it (`config.training_data`)."""
        if SPLIT_COLUMN in columns:
            return {"column": SPLIT_COLUMN}
        return {"id_column": self.key_column, "fractions": dict(self.fractions_or_default())}

    @classmethod
    def from_rule(cls, rule: Mapping[str, Any]) -> TableOptions:
        """The options a recorded `rule` describes (a table with a split column needs none)."""
        return cls(key_column=rule.get("id_column", "image"), fractions=rule.get("fractions"))


def load_split(data: Any, *, split: str = "train", streaming: bool = False, table: TableOptions | None = None):
    """One split of a dataset given as a local path (dataset folder, Parquet, table, image folder) or a Hub id."""
    return load_rows(data, split=split, streaming=streaming, table=table).dataset


def is_url(data: Any) -> bool:
    """An fsspec URL of object storage (`s3://`, `gs://`, `az://`, ...), not a local path or a Hub id."""
    return (
        isinstance(data, str)
        and re.match(r"^[a-z][a-z0-9+.-]*://", data) is not None
        and not data.startswith(("file://", "hf://"))
    )


def load_rows(
    data: Any,
    *,
    split: str,
    streaming: bool,
    storage_options: dict[str, Any] | None = None,
    table: TableOptions | None = None,
) -> LoadedRows:
    """The rows of split `split` of `data`: a dataset, a dict of splits, a local path (a `save_to_disk` folder,
    Parquet files, a catalogue table, an image folder), an object-storage URL or a Hub id."""
    if isinstance(data, (DatasetDict, IterableDatasetDict)):
        if split not in data:
            raise UserError(f"no split {split!r} in the dataset; its splits are {list(data)}")
        return LoadedRows(data[split])
    if isinstance(data, (Dataset, IterableDataset)):
        return LoadedRows(data)
    if not isinstance(data, (str, os.PathLike)):
        raise TypeError(
            f"a task source must be a datasets Dataset / IterableDataset / DatasetDict, a local path or a "
            f"Hub id; got {type(data).__name__}"
        )
    if is_url(data):
        return _load_url(str(data), split=split, streaming=streaming, storage_options=storage_options or {})
    path = Path(data)
    origin = {"data": str(path.resolve()), "split": split}
    if path.is_dir() and ((path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()):
        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, DatasetDict):
            loaded = load_rows(loaded, split=split, streaming=False).dataset
        return LoadedRows(loaded.to_iterable_dataset() if streaming else loaded, origin=origin)
    if is_table(path):
        table = table or TableOptions()
        all_rows = read_table(path)
        rows = select_split(
            all_rows, split, key_column=table.key_column, fractions=table.fractions_or_default(), where=str(path)
        )
        origin["split_by"] = table.rule(all_rows.column_names)
        base = str(path.resolve().parent)
        return LoadedRows(rows.to_iterable_dataset() if streaming else rows, base_folder=base, origin=origin)
    parquet_files = sorted(str(p) for p in path.rglob("*.parquet")) if path.is_dir() else []
    if path.suffix == ".parquet" and path.is_file():
        parquet_files = [str(path)]
    if parquet_files:
        parquet_files = split_files(parquet_files, split, root=str(path) if path.is_dir() else "", where=str(data))
        loaded = datasets.load_dataset("parquet", data_files=parquet_files, split="train", streaming=streaming)
        base = str(path.resolve() if path.is_dir() else path.resolve().parent)
        return LoadedRows(loaded, parquet_files, base_folder=base, origin=origin)
    if path.is_dir():
        loaded = datasets.load_dataset("imagefolder", data_dir=str(path), split=split, streaming=streaming)
        return LoadedRows(loaded, origin=origin)
    if path.exists():
        raise UserError(
            f"{path}: not a dataset folder, a Parquet file, a catalogue table (.csv, .jsonl) or an image folder"
        )
    require_path_or_hub_id(str(data), "data")
    return LoadedRows(
        datasets.load_dataset(str(data), split=split, streaming=streaming), origin={"data": str(data), "split": split}
    )


def local_splits(data: Any, table: TableOptions | None = None) -> list[str]:
    """The splits of a local dataset folder, Parquet folder or catalogue table; [] for anything else (a Hub id,
    object storage, an image folder), whose splits are not known without reading it."""
    if not isinstance(data, (str, os.PathLike)) or is_url(data):
        return []
    path = Path(data)
    if (path / "dataset_dict.json").is_file():
        return list(json.loads((path / "dataset_dict.json").read_text())["splits"])
    if is_table(path) and path.is_file():
        table = table or TableOptions()
        rows = read_table(path)
        if SPLIT_COLUMN in rows.column_names:
            return sorted({str(value) for value in rows[SPLIT_COLUMN] if value})
        return sorted(name for name, share in table.fractions_or_default().items() if share > 0)
    if path.is_dir() and not (path / "dataset_info.json").exists():
        files = sorted(str(p) for p in path.rglob("*.parquet"))
        return sorted({_split_in_path(file, str(path)) for file in files})
    return []


def _split_in_path(file: str, root: str) -> str:
    relative = posixpath.relpath(file, root) if root and file.startswith(root.rstrip("/") + "/") else Path(file).name
    match = _SPLIT_IN_PATH.search(relative)
    return match.group(1) if match else "train"


def split_files(files: Sequence[str], split: str, *, root: str, where: str) -> list[str]:
    """The files of `split` among Parquet `files` (under `root`): by the split their names or folders name, as
    `prepare` writes them; files that name none belong to "train", which is all there is where none does."""
    by_split: dict[str, list[str]] = {}
    for file in files:
        by_split.setdefault(_split_in_path(file, root), []).append(file)
    if split not in by_split:
        raise UserError(f"{where}: no split {split!r}; its splits are {sorted(by_split)}")
    return by_split[split]


def _load_url(url: str, *, split: str, streaming: bool, storage_options: dict[str, Any]) -> LoadedRows:
    """The Parquet files of `split` at an object-storage URL (a file, or every Parquet file under a folder)."""
    import fsspec
    from huggingface_hub.errors import OfflineModeIsEnabled

    fs, root = fsspec.core.url_to_fs(url, **storage_options)
    if root.endswith(".parquet") and fs.isfile(root):
        paths = [root]
    else:
        paths = sorted(fs.glob(f"{root.rstrip('/')}/**/*.parquet"))
    if not paths:
        raise MissingPathError(f"no Parquet files at {url} (a URL source is a Parquet file or a folder of them)")
    paths = split_files(paths, split, root=root, where=url)
    files = [fs.unstrip_protocol(path) for path in paths]
    try:
        # A copy: datasets adds its own entries (an "hf" key) to the options it is given.
        loaded = datasets.load_dataset(
            "parquet",
            data_files=files,
            split="train",
            streaming=streaming,
            storage_options=copy.deepcopy(storage_options),
        )
    except OfflineModeIsEnabled:
        raise UnreachableError(
            f"{url}: datasets' offline mode (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE) refuses to copy object storage "
            "into its cache: stream the source (streaming: true) or unset it"
        ) from None
    return LoadedRows(loaded, files, origin={"data": url, "split": split})


def parquet_row_count(files: Sequence[str], storage_options: dict[str, Any] | None = None) -> int:
    """The rows of the Parquet `files` (local paths or URLs), read from their footers alone."""
    import fsspec
    import pyarrow.parquet as pq

    def footer_rows(path: str) -> int:
        with fsspec.open(path, "rb", **((storage_options or {}) if is_url(path) else {})) as file:
            return pq.ParquetFile(file).metadata.num_rows

    return sum(footer_rows(path) for path in files)


__all__ = [
    "LoadedRows",
    "TableOptions",
    "is_url",
    "load_rows",
    "load_split",
    "local_splits",
    "parquet_row_count",
    "require_path_or_hub_id",
    "split_files",
]
