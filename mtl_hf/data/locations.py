"""Where a task source's rows come from: a datasets object, a local folder or Parquet file, an image folder, an
object-storage URL (`s3://`, `gs://`, ...) or a Hub dataset id; and how many rows a stream of Parquet shards holds."""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import datasets
from datasets import Dataset, DatasetDict, IterableDataset, IterableDatasetDict

from ..errors import MissingPathError, UnreachableError, UserError


def load_split(data: Any, *, split: str = "train", streaming: bool = False) -> Dataset | IterableDataset:
    """One split of a dataset given as a local path (dataset folder, Parquet, image folder) or a Hub id."""
    return load_rows(data, split=split, streaming=streaming)[0]


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
        raise MissingPathError(f"no Parquet files at {url} (a URL source is a Parquet file or a folder of them)")
    if split != "train":
        raise UserError(
            f"{url}: Parquet files in object storage form one split, 'train'; got split={split!r} "
            "(give the evaluation shards as their own source, or hold out eval_fraction)"
        )
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
    return loaded, files


def load_rows(
    data: Any, *, split: str, streaming: bool, storage_options: dict[str, Any] | None = None
) -> tuple[Dataset | IterableDataset, list[str]]:
    """The rows of `data` (a dataset, a dict of splits, a path, an object-storage URL or a Hub id) and the
    Parquet files they come from, if any (streaming sources count their rows from the files' footers)."""
    if isinstance(data, (DatasetDict, IterableDatasetDict)):
        if split not in data:
            raise UserError(f"no split {split!r} in the dataset; its splits are {list(data)}")
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
            loaded = load_rows(loaded, split=split, streaming=False)[0]
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
        raise UserError(f"{path}: not a dataset folder, a Parquet file or an image folder")
    require_path_or_hub_id(str(data), "data")
    return datasets.load_dataset(str(data), split=split, streaming=streaming), []


def require_path_or_hub_id(name: str, kind: str, *, where: str = "") -> None:
    """Refuses `name` when no such local path exists and it is not `owner/name`, the only form tried on the Hub.

    So a typo in a local path fails at once with one line, instead of retrying the Hub.
    """
    if not Path(name).exists() and re.fullmatch(r"[\w-][\w.-]*/[\w-][\w.-]*", name) is None:
        raise MissingPathError(f"{where}no {kind} at {name} (tried as a local path; a Hub id has the form owner/name)")


def parquet_row_count(files: Sequence[str], storage_options: dict[str, Any] | None = None) -> int:
    """The rows of the Parquet `files` (local paths or URLs), read from their footers alone."""
    import fsspec
    import pyarrow.parquet as pq

    def footer_rows(path: str) -> int:
        with fsspec.open(path, "rb", **((storage_options or {}) if is_url(path) else {})) as file:
            return pq.ParquetFile(file).metadata.num_rows

    return sum(footer_rows(path) for path in files)


__all__ = ["is_url", "load_rows", "load_split", "parquet_row_count", "require_path_or_hub_id"]
