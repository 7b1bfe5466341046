"""The peak memory of a block of code: CUDA's allocator peak on a GPU, else the process's resident memory,
sampled in a thread."""

from __future__ import annotations

import threading

import torch


class PeakMemory:
    """The peak memory of this process while the block runs: CUDA's allocator peak, else sampled RSS."""

    def __init__(self, interval: float = 0.05):
        self.interval, self.peak_mb, self.kind = interval, 0.0, "cpu-rss"
        self._stop = threading.Event()

    def __enter__(self) -> PeakMemory:
        if torch.cuda.is_available():
            self.kind = "cuda-allocated"
            torch.cuda.reset_peak_memory_stats()
            return self
        import psutil

        process = psutil.Process()

        def sample():
            while not self._stop.is_set():
                self.peak_mb = max(self.peak_mb, process.memory_info().rss / 2**20)
                self._stop.wait(self.interval)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.kind == "cuda-allocated":
            self.peak_mb = torch.cuda.max_memory_allocated() / 2**20
            return
        self._stop.set()
        self._thread.join()


__all__ = ["PeakMemory"]
