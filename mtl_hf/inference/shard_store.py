"""`OutputFolder`: where a tagging run writes (a local folder or an fsspec URL), and its resume protocol.

    OUT/_progress/run.json            the run's fingerprint (model, input, options, engine)
    OUT/_progress/part-00000.json     a finished shard's record: its counts and broken photos
    OUT/predictions/part-00000.parquet

The protocol, so that a rerun keeps only sound shards:

- A shard is written under a temporary name unique to the attempt (`_progress/tmp/{shard}.{attempt}.parquet`), so
  that Spark's task retries and speculative copies of one shard never write one file at once; on a local disk the
  file is flushed and fsynced, then renamed over the final name (atomic), and the folder fsynced. On object
  storage an upload appears whole or not at all.
- Its record is written the same way, before the rename of the shard.
- A shard counts as done only if its record reads, its Parquet footer reads, and the footer's row count is the
  record's `rows_out`. Anything else (a shard cut short by a crashed machine, a record without its shard) is
  redone by the rerun.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import pyarrow as pa

from ..errors import OutputExistsError
from .inputs import InputShard

logger = logging.getLogger(__name__)

PREDICTIONS, PROGRESS = "predictions", "_progress"
SUMMARY_FILE, BAD_IMAGES_FILE = "predict_summary.json", "bad_images.jsonl"


class OutputFolder:
    """The output of a run (local or fsspec URL): claimed with the run's fingerprint, written shard by shard."""

    def __init__(self, location: str, storage_options: Mapping[str, Any]):
        import fsspec

        self.location = location
        self.fs, self.root = fsspec.core.url_to_fs(location, **storage_options)
        self.local = "file" in (self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,))

    def path(self, *parts: str) -> str:
        return "/".join([self.root.rstrip("/"), *parts])

    def check(self, run: dict[str, Any]) -> bool:
        """Whether the folder holds this same run (to resume); raises when it holds another run or other files."""
        recorded = self.path(PROGRESS, "run.json")
        if self.fs.exists(recorded):
            with self.fs.open(recorded, "r") as handle:
                earlier = json.load(handle)
            if earlier.get("fingerprint") != run["fingerprint"]:
                differs = [
                    key for key in ("model", "input", "options", "engine", "dtype") if earlier.get(key) != run.get(key)
                ]
                raise OutputExistsError(
                    f"{self.location} holds a run of another {' and '.join(differs) or 'run'} (fingerprint "
                    f"{earlier.get('fingerprint', '?')[:12]}, this run {run['fingerprint'][:12]}): give a new "
                    "--output, or remove that folder to replace it"
                )
            return True
        if self.fs.exists(self.root) and self.fs.ls(self.root):
            raise OutputExistsError(
                f"{self.location} exists and holds other files: give a new or empty --output folder"
            )
        return False

    def claim(self, run: dict[str, Any]) -> None:
        """Records the run's fingerprint and what it is, unless the folder already holds it (`check`)."""
        if not self.check(run):
            self._write_json(self.path(PROGRESS, "run.json"), run)

    def finished(self, shard: str) -> bool:
        """Whether `shard` was written whole: its record and its Parquet footer read, with the same row count."""
        import pyarrow.parquet as pq

        output = self.path(PREDICTIONS, f"{shard}.parquet")
        if not self.fs.exists(output):
            return False
        try:
            record = self._read_json(self.path(PROGRESS, f"{shard}.json"))
            with self.fs.open(output, "rb") as handle:
                rows = pq.ParquetFile(handle).metadata.num_rows
        except (OSError, ValueError, pa.ArrowException) as error:  # ValueError: JSON that does not parse
            logger.warning("%s: redone, its output is unreadable (%s)", shard, error)
            return False
        if rows != record.get("rows_out"):
            logger.warning(
                "%s: redone, its output has %d rows where its record says %s", shard, rows, record.get("rows_out")
            )
            return False
        return True

    def write_shard(self, shard: str, answers: pa.Table, record: dict[str, Any]) -> None:
        """The shard's record, then its rows, each under a name unique to this attempt and renamed into place."""
        import pyarrow.parquet as pq

        self._write_json(self.path(PROGRESS, f"{shard}.json"), record)
        self._write_atomically(
            self.path(PREDICTIONS, f"{shard}.parquet"), lambda handle: pq.write_table(answers, handle)
        )

    def records(self, shards: list[InputShard]) -> Iterator[dict[str, Any]]:
        for shard in shards:
            yield self._read_json(self.path(PROGRESS, f"{shard.name}.json"))

    def write_summary(self, summary: dict[str, Any], broken: list[dict[str, Any]]) -> None:
        lines = "".join(json.dumps(row) + "\n" for row in broken).encode()
        self._write_atomically(self.path(BAD_IMAGES_FILE), lambda handle: handle.write(lines))
        self._write_json(self.path(SUMMARY_FILE), summary)

    def _read_json(self, path: str) -> dict[str, Any]:
        with self.fs.open(path, "r") as handle:
            return json.load(handle)

    def _write_json(self, path: str, value: Any) -> None:
        text = json.dumps(value, indent=2).encode()
        self._write_atomically(path, lambda handle: handle.write(text))

    def _write_atomically(self, path: str, write) -> None:
        folder, name = path.rsplit("/", 1)
        temporary = self.path(PROGRESS, "tmp", f"{name}.{uuid.uuid4().hex}")  # unique to this attempt
        self.fs.makedirs(self.path(PROGRESS, "tmp"), exist_ok=True)
        self.fs.makedirs(folder, exist_ok=True)
        if not self.local:  # object storage: an upload appears whole or not at all
            with self.fs.open(temporary, "wb") as handle:
                write(handle)
            self.fs.mv(temporary, path)
            return
        try:
            with open(temporary, "wb") as handle:
                write(handle)
                handle.flush()
                os.fsync(handle.fileno())  # the bytes are on disk before the name says the file is whole
            os.replace(temporary, path)
        finally:
            if os.path.exists(temporary):
                os.remove(temporary)
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)  # and so is the rename
        finally:
            os.close(descriptor)


__all__ = ["BAD_IMAGES_FILE", "PREDICTIONS", "PROGRESS", "SUMMARY_FILE", "OutputFolder"]
