"""Reading a streaming source: this rank's share of its rows, shuffled as streams are (shard order, then a
bounded buffer), and closed cleanly at exit when a run stops half-way through a pass."""

from __future__ import annotations

import atexit
import weakref
from collections.abc import Iterator

import numpy as np
from datasets import IterableDataset
from datasets.distributed import split_dataset_by_node


def stream_rows(
    dataset: IterableDataset, *, seed: int, rank: int, world_size: int, shuffle: bool, buffer_size: int
) -> Iterator[dict]:
    """This rank's share of `dataset`'s rows, raw, in a seeded shuffled order.

    The shuffle is done here on one shard at a time: `IterableDataset.shuffle` reads shards in
    threads, and datasets then waits seconds for them at the end of every pass.
    """
    if world_size > 1:
        dataset = split_dataset_by_node(dataset, rank=rank, world_size=world_size)
    if not shuffle:
        return _closed_at_exit(_rows(dataset))
    rng = np.random.default_rng(seed)
    shard_order = rng.permutation(dataset.num_shards).tolist()
    rows = (row for shard in shard_order for row in _rows(dataset.shard(dataset.num_shards, shard)))
    return _closed_at_exit(_buffer_shuffled(rows, buffer_size, rng))


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


__all__ = ["stream_rows"]
