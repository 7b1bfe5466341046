"""Reading the rows a mixture's plan asks of one source on this rank, pass by pass: a seeded permutation of
this rank's share (map-style), or its share of the stream (streaming), resumed mid-pass by skipping rows."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from itertools import islice
from typing import TYPE_CHECKING

import numpy as np

from ..errors import UserError
from .sources import RawExample

if TYPE_CHECKING:
    from .mixture import TaskMixture, _Segment

logger = logging.getLogger(__name__)


class SourceReader:
    """Reads the rows that the plan asks of one source, on this rank, for one epoch."""

    def __init__(self, mixture: TaskMixture, index: int, epoch: int):
        self.mixture, self.index, self.epoch = mixture, index, epoch
        self.source = mixture.sources[index]
        self._pass_index: int | None = None
        self._order: np.ndarray | None = None  # map-style: this rank's row order in the pass
        self._stream: Iterator[dict] | None = None  # streaming: this rank's rows in the pass
        self._position = 0
        self._restarts = 0

    def _seed(self, pass_index: int) -> list[int]:
        return [self.mixture.seed, self.epoch, self.index, pass_index]

    def read(self, segment: _Segment) -> list[RawExample]:
        if segment.pass_index != self._pass_index:
            self._open(segment.pass_index)
        if self.source.is_streaming:
            return self._read_stream(segment)
        indices = self._order[segment.start : segment.start + segment.count]
        return self.source.rows(indices.tolist())

    def _open(self, pass_index: int) -> None:
        self._pass_index = pass_index
        self._position = 0
        mixture = self.mixture
        if self.source.is_streaming:
            self._stream = self._new_stream(pass_index)
            return
        num_rows = self.source.num_rows
        order = (
            np.random.default_rng(self._seed(pass_index)).permutation(num_rows)
            if mixture.shuffle
            else np.arange(num_rows)
        )
        share = num_rows // mixture.world_size
        self._order = order[mixture.rank :: mixture.world_size][:share]

    def _new_stream(self, pass_index: int) -> Iterator[dict]:
        mixture = self.mixture
        seed = int(np.random.default_rng([*self._seed(pass_index), self._restarts]).integers(2**31))
        return self.source.stream(
            seed=seed,
            rank=mixture.rank,
            world_size=mixture.world_size,
            shuffle=mixture.shuffle,
            buffer_size=mixture.shuffle_buffer_size,
        )

    def _read_stream(self, segment: _Segment) -> list[RawExample]:
        if segment.start > self._position:  # resuming inside a pass: skip the rows already served
            skipped = sum(1 for _ in islice(self._stream, segment.start - self._position))
            self._position += skipped
        rows = []
        while len(rows) < segment.count:
            row = next(self._stream, None)
            if row is None:
                if self._position == 0:
                    raise UserError(f"source {self.source.name!r} yields no rows on rank {self.mixture.rank}")
                # The stream held fewer rows on this rank than its declared share: wrap around
                # with a new shuffle, keeping every rank on the same plan.
                logger.warning(
                    "source %r ran out after %d rows on rank %d; starting it again",
                    self.source.name,
                    self._position,
                    self.mixture.rank,
                )
                self._restarts += 1
                self._stream = self._new_stream(self._pass_index)
                continue
            rows.append(self.source.example(row, f"{self._pass_index}:{self._position}"))
            self._position += 1
        return rows


__all__ = ["SourceReader"]
