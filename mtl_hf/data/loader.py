"""`MultiTaskDataLoader`: the mixture picks each step's rows in the main process, the collator decodes them in
worker processes, and the loader counts the batches handed out, so that its state is the training loop's
position; and how many workers a machine needs to feed its accelerator."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

from ..errors import UserError

if TYPE_CHECKING:
    from .mixture import MixtureBatch, TaskMixture


class BatchPassthrough(torch.utils.data.Dataset):
    """A DataLoader's dataset when its sampler hands over whole batches of rows (the mixture, or the
    inference path's row batches): each goes to the collator as it is."""

    def __getitem__(self, batch: MixtureBatch) -> MixtureBatch:
        return batch


class MultiTaskDataLoader(torch.utils.data.DataLoader):
    """
    A DataLoader over a [`TaskMixture`]: the mixture picks the rows in the main process, the
    collator decodes and transforms them (in `num_workers` worker processes), batches arrive in
    the plan's order. It counts the batches it has handed out, so `state_dict()` is the position
    of the training loop, not of the workers' prefetching.
    """

    def __init__(self, mixture: TaskMixture, collator, **kwargs):
        for key in ("batch_size", "shuffle", "sampler", "batch_sampler", "drop_last"):
            if key in kwargs:
                raise UserError(f"{key} is the TaskMixture's to decide; set it there, not on the DataLoader")
        super().__init__(BatchPassthrough(), sampler=mixture, batch_size=None, collate_fn=collator, **kwargs)
        self.mixture = mixture
        self._consumed = 0

    def __iter__(self):
        self._consumed = self.mixture.state_dict()["step"]
        for batch in super().__iter__():
            self._consumed += 1
            yield batch
        # A finished epoch resumes from the start of the next one.
        self.mixture.set_epoch(self.mixture.state_dict()["epoch"] + 1)
        self._consumed = 0

    def set_epoch(self, epoch: int) -> None:
        # Trainer calls this at the start of every epoch, the resumed one included: a position
        # restored inside that epoch must survive it.
        if epoch != self.mixture.state_dict()["epoch"]:
            self.mixture.set_epoch(epoch)

    def state_dict(self) -> dict[str, Any]:
        return self.mixture.state_dict(step=self._consumed)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.mixture.load_state_dict(state)
        self._consumed = self.mixture.state_dict()["step"]


# bench/jpeg_decode.py, 800-px product JPEGs to 224-px training tensors: one worker (one core) makes
# ~370 images/s with draft decoding (~200 decoding every pixel; medians of 9 runs on a shared 2-core
# VM); a ViT-B/16 trains at ~1,030 images/s on an A100 (the figure and its source are in the bench).
# Three workers feed it; twice that leaves room for an H100 (2.06x an A100 in NVIDIA's NeMo ViT
# training figures, cited in the bench) or for heavier photos.
IMAGES_PER_WORKER = 370


ACCELERATOR_IMAGES_PER_SECOND = 1030


WORKERS_PER_ACCELERATOR = 2 * math.ceil(ACCELERATOR_IMAGES_PER_SECOND / IMAGES_PER_WORKER)


def default_num_workers(*, use_cpu: bool = False) -> int:
    """
    DataLoader workers for this machine. On an accelerator: enough to feed a ViT-B/16 at 224 px
    (`WORKERS_PER_ACCELERATOR`, from bench/jpeg_decode.py), but never more than the CPUs per
    local process less one (the main process needs its own). When the model trains on the CPU:
    none, since workers would take the cores the model computes on (bench/data_throughput.py).
    """
    on_accelerator = torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available())
    if use_cpu or not on_accelerator:
        return 0
    local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    return max(1, min(WORKERS_PER_ACCELERATOR, (os.cpu_count() or 2) // local_processes - 1))


__all__ = [
    "ACCELERATOR_IMAGES_PER_SECOND",
    "BatchPassthrough",
    "IMAGES_PER_WORKER",
    "MultiTaskDataLoader",
    "default_num_workers",
]
