"""Where `prepare` reads photos and writes shards: local folders or any fsspec URL (`s3://`, `gs://`, ...), the
same on the driver and on the executors."""

from __future__ import annotations

from typing import Any

from ...errors import MissingPathError, OutputExistsError


def filesystem(location: str, storage_options: dict[str, Any]):
    import fsspec

    protocol = fsspec.utils.get_protocol(location)
    return fsspec.core.url_to_fs(location, **(storage_options if protocol not in ("file", "local") else {}))


def open_in(folder: str, name: str, mode: str, storage_options: dict[str, Any]):
    """File `name` in `folder` (a local path or a URL), the folder created first where that means anything."""
    fs, root = filesystem(folder, storage_options)
    fs.makedirs(root, exist_ok=True)
    return fs.open(f"{root.rstrip('/')}/{name}", mode)


def check_output(output: str, storage_options: dict[str, Any]) -> None:
    """Before Spark starts: the output is new or an empty folder, and in object storage its bucket exists."""
    fs, root = filesystem(output, storage_options)
    if fs.exists(root) and (not fs.isdir(root) or fs.ls(root)):
        raise OutputExistsError(
            f"{output} already exists and is not an empty folder; give a new output folder (nothing there was changed)"
        )
    bucket = root.strip("/").split("/")[0]  # object stores have buckets, not folders, to create first
    if "://" in output and not fs.exists(bucket):
        raise MissingPathError(f"{output}: {bucket} does not exist; create it first (a bucket is not created for you)")


__all__ = ["check_output", "filesystem", "open_in"]
