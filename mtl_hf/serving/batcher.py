"""`DynamicBatcher`: photos from concurrent requests answered in shared forwards.

Each request's photos join one queue; a single worker takes the first waiting photo, then up to
`max_batch_size` in all, waiting at most `max_wait_s` for more, and runs the batch in a thread (so the event
loop keeps accepting requests while the model computes). Every photo's future gets its own answer; a batch that
fails fails its photos' requests, never the server.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch


class DynamicBatcher:
    def __init__(self, run_batch: Callable[[list[torch.Tensor]], list[Any]], *, max_batch_size: int, max_wait_s: float):
        self.run_batch, self.max_batch_size, self.max_wait_s = run_batch, max_batch_size, max_wait_s
        self.batches = self.images = 0  # served so far, for /health
        self._queue: asyncio.Queue | None = None
        self._worker: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._worker = asyncio.create_task(self._serve())

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        self._executor.shutdown(wait=True)

    async def submit(self, pixels: Sequence[torch.Tensor]) -> list[Any]:
        """The answers for `pixels` (one request's photos), once the batches holding them have run."""
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in pixels]
        for item in zip(pixels, futures, strict=True):
            self._queue.put_nowait(item)
        return list(await asyncio.gather(*futures))

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            deadline = loop.time() + self.max_wait_s
            while len(batch) < self.max_batch_size:
                try:
                    batch.append(self._queue.get_nowait())
                    continue
                except asyncio.QueueEmpty:
                    pass
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), remaining))
                except asyncio.TimeoutError:  # not the builtin TimeoutError: asyncio's own class on Python 3.10
                    break
            waiting = [(pixels, future) for pixels, future in batch if not future.done()]  # timed-out requests
            if not waiting:
                continue
            try:
                answers = await loop.run_in_executor(self._executor, self.run_batch, [p for p, _ in waiting])
            except Exception as error:  # the requests of this batch fail with it; the server goes on
                for _, future in waiting:
                    if not future.done():
                        future.set_exception(error)
                continue
            self.batches += 1
            self.images += len(waiting)
            for (_, future), answer in zip(waiting, answers, strict=True):
                if not future.done():
                    future.set_result(answer)


__all__ = ["DynamicBatcher"]
