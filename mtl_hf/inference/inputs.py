"""What `mtl-hf predict --output` reads: a catalogue cut into input shards, each tagged and written on its own.

A source is an image file, a folder of images (recursive, by extension), a catalogue table (`.csv`, `.tsv`,
`.jsonl`, `.parquet`) with an image column (paths relative to the table, URLs, or image bytes), or a folder of
Parquet shards, local or in object storage (`s3://bucket/shards`). A folder of Parquet files gives one input
shard per file; anything else is cut into shards of `shard_rows` rows, so that a run over a large table can be
resumed shard by shard too.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from ..data.locations import is_url
from ..data.tables import photo_location
from ..errors import MissingPathError, UnreachableError, UserError, one_line

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
TABLE_EXTENSIONS = (".csv", ".tsv", ".jsonl", ".parquet")


@dataclass(frozen=True)
class InputShard:
    """One part of the catalogue: its output's name, where it comes from (for the run's fingerprint), and how to
    read its rows (a table with the image column)."""

    name: str
    origin: str
    read: Callable[[], pa.Table]
    base_folder: str | None = None  # where the image column's relative paths start
    image_column: str | None = None  # a folder's shards: "image"; else the column the user names
    read_schema: Callable[[], pa.Schema] | None = None  # a Parquet file's footer: its columns without its rows

    def columns(self) -> list[str]:
        """The shard's column names, read without its rows where the file allows it."""
        return self.read_schema().names if self.read_schema is not None else self.read().column_names


def input_shards(
    source: str,
    *,
    image_column: str = "image",
    shard_rows: int = 10_000,
    storage_options: Mapping[str, Any] | None = None,
    hash_photos: bool = False,
) -> list[InputShard]:
    """The shards of `source`, in a fixed order; a source without a single row is refused.

    A folder's shard names each photo's size and modification time in its origin (so that a replaced photo
    changes the run's fingerprint), or with `hash_photos` a hash of its bytes (for copies that keep both)."""
    if shard_rows < 1:
        raise UserError(f"--shard_rows must be at least 1, got {shard_rows}")
    options = dict(storage_options or {})
    if is_url(source):
        shards = _remote_parquet_shards(source, options)
    else:
        path = Path(source)
        if not path.exists():
            raise MissingPathError(f"no file or folder at {source}")
        if path.is_dir():
            parquet = sorted(path.rglob("*.parquet"))
            shards = (
                _local_parquet_shards(parquet, path) if parquet else _image_folder_shards(path, shard_rows, hash_photos)
            )
        elif path.suffix.lower() in IMAGE_EXTENSIONS:
            shards = [_images_shard("part-00000", [path.name], path.parent, hash_photos)]
        elif path.suffix.lower() in TABLE_EXTENSIONS:
            shards = _table_shards(path, shard_rows)
        else:
            raise UserError(
                f"{source}: not an image ({', '.join(IMAGE_EXTENSIONS)}), a table ({', '.join(TABLE_EXTENSIONS)}) "
                "or a folder of either"
            )
    return shards


def check_image_column(columns: list[str], image_column: str, where: str) -> None:
    if image_column not in columns:
        raise UserError(
            f"{where} has no image column {image_column!r}; its columns are {columns}: "
            "name the one with the photos with --image_column"
        )


def image_reference(cell: Any) -> Any:
    """What the output says about a row's photo: its path as the input gave it (the path of `{"bytes", "path"}`)."""
    if isinstance(cell, Mapping):
        return cell.get("path")
    return cell if isinstance(cell, str) else None


def image_location(cell: Any, base_folder: str | None, storage_options: Mapping[str, Any]) -> Any:
    """A cell as the decoder takes it: a relative path from its table's folder, a URL with its fsspec options."""
    cell = photo_location(cell, base_folder)
    if isinstance(cell, str) and "://" in cell and storage_options:
        return {"path": cell, "bytes": None, "storage_options": dict(storage_options)}
    return cell


def _image_folder_shards(folder: Path, shard_rows: int, hash_photos: bool) -> list[InputShard]:
    images = sorted(
        str(path.relative_to(folder))
        for path in folder.rglob("*")
        if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file()
    )
    if not images:
        raise UserError(
            f"{folder} holds no images ({', '.join(IMAGE_EXTENSIONS)}) and no Parquet files: nothing to tag"
        )
    return [
        _images_shard(f"part-{index:05d}", images[start : start + shard_rows], folder, hash_photos)
        for index, start in enumerate(range(0, len(images), shard_rows))
    ]


def _images_shard(name: str, relative_paths: list[str], folder: Path, hash_photos: bool) -> InputShard:
    digest = hashlib.sha256()
    for relative in relative_paths:
        path = folder / relative
        if hash_photos:
            content = hashlib.sha256()
            with open(path, "rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    content.update(chunk)
            state = content.hexdigest()
        else:
            stat = path.stat()
            state = f"{stat.st_size}:{stat.st_mtime_ns}"
        digest.update(f"{relative}\0{state}\0".encode())
    kind = "contents" if hash_photos else "sizes and times"
    origin = (
        f"{folder}:{relative_paths[0]}..{relative_paths[-1]} ({len(relative_paths)} images, {kind} "
        f"{digest.hexdigest()[:16]})"
    )
    read = lambda: pa.table({"image": relative_paths})  # noqa: E731
    return InputShard(name, origin, read, base_folder=str(folder), image_column="image")


def _table_shards(path: Path, shard_rows: int) -> list[InputShard]:
    table = _read_table(path)
    if table.num_rows == 0:
        raise UserError(f"{path} has no rows: nothing to tag")
    stat = path.stat()
    shards = []
    for index, start in enumerate(range(0, table.num_rows, shard_rows)):
        part = table.slice(start, shard_rows)
        origin = f"{path.resolve()}@{stat.st_size}:{stat.st_mtime_ns} rows {start}..{start + part.num_rows}"
        shards.append(InputShard(f"part-{index:05d}", origin, lambda part=part: part, base_folder=str(path.parent)))
    return shards


def _read_table(path: Path) -> pa.Table:
    import pyarrow.csv as csv
    import pyarrow.json as pa_json
    import pyarrow.parquet as pq

    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return pq.read_table(path)
    if suffix == ".jsonl":
        return pa_json.read_json(path)
    # Every column as text: ids such as 000123 keep their zeros, as `prepare` reads a catalogue.
    delimiter = "\t" if suffix == ".tsv" else ","
    header = csv.read_csv(path, parse_options=csv.ParseOptions(delimiter=delimiter)).column_names
    return csv.read_csv(
        path,
        parse_options=csv.ParseOptions(delimiter=delimiter),
        convert_options=csv.ConvertOptions(column_types=dict.fromkeys(header, pa.string())),
    )


def _local_parquet_shards(files: list[Path], root: Path) -> list[InputShard]:
    import pyarrow.parquet as pq

    shards = []
    for index, file in enumerate(files):
        stat = file.stat()
        origin = f"{file.relative_to(root)}@{stat.st_size}:{stat.st_mtime_ns}"
        shards.append(
            InputShard(
                f"part-{index:05d}",
                origin,
                lambda file=file: pq.read_table(file),
                base_folder=str(file.parent),
                read_schema=lambda file=file: pq.read_schema(file),
            )
        )
    return shards


def _remote_parquet_shards(url: str, options: dict[str, Any]) -> list[InputShard]:
    import fsspec
    import pyarrow.parquet as pq

    fs, root = fsspec.core.url_to_fs(url, **options)
    try:
        if root.endswith(".parquet") and fs.isfile(root):
            paths = [root]
        else:
            paths = sorted(fs.glob(f"{root.rstrip('/')}/**/*.parquet"))
        infos = {path: fs.info(path) for path in paths}
    except (PermissionError, OSError) as error:
        raise UnreachableError(f"{url}: object storage refused the listing ({one_line(error)})") from None
    except Exception as error:  # botocore's NoCredentialsError and its kin are not OSErrors
        if "credential" in str(error).lower():
            raise UnreachableError(
                f"{url}: no credentials for object storage: give them with --storage_options "
                '\'{"key": ..., "secret": ...}\' or the provider\'s environment variables (AWS_ACCESS_KEY_ID ...)'
            ) from None
        raise
    if not paths:
        raise MissingPathError(f"no Parquet files at {url} (give a Parquet file or a folder of them)")

    def reader(path: str, read_file: Callable) -> Callable:
        def read():
            with fs.open(path, "rb") as file:
                return read_file(file)

        return read

    def origin(path: str) -> str:
        info = infos[path]
        return f"{fs.unstrip_protocol(path)}@{info.get('size')}:{info.get('ETag') or info.get('mtime')}"

    return [
        InputShard(
            f"part-{index:05d}",
            origin(path),
            reader(path, pq.read_table),
            base_folder=os.path.dirname(fs.unstrip_protocol(path)),
            read_schema=reader(path, pq.read_schema),
        )
        for index, path in enumerate(paths)
    ]


__all__ = [
    "IMAGE_EXTENSIONS",
    "InputShard",
    "check_image_column",
    "image_location",
    "image_reference",
    "input_shards",
]
