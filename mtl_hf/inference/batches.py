"""The batched inference path that evaluation, `MultiTaskTrainer.predict` and `mtl-hf predict` share.

Rows are read and encoded in the main process (so that counts kept there, such as unknown labels, see every
row), decoded and transformed by DataLoader workers, and run through the model without gradient. Every rank
makes the same number of forwards: a rank whose rows ran out (or whose batch held only broken photos) runs a
padding batch while the others finish, whose outputs are dropped, since under FSDP every forward is a
collective that a missing rank would leave waiting forever. Each batch's outputs reach the host in one copy.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

from ..data.loader import BatchPassthrough
from ..utils.collectives import any_rank

if TYPE_CHECKING:
    from ..data.collator import MultiTaskCollator
    from ..data.sources import RawExample, TaskSource
    from ..data.transforms import ImageTransforms


@dataclass(frozen=True)
class RowBatch:
    """A batch of encoded rows on its way to a worker, with each row's position in the output's order."""

    examples: list[RawExample]
    positions: list[int]


@dataclass
class BatchOutputs:
    """One batch's results on the host: the positions of the rows whose image decoded, each task's logits for
    them (and their targets when the rows had labels), and the rows left out with their reason."""

    positions: np.ndarray
    logits: dict[str, np.ndarray] = field(default_factory=dict)
    labels: dict[str, np.ndarray] = field(default_factory=dict)
    skipped_rows: list[tuple[Any, str, str]] = field(default_factory=list)  # (row, error type, message)
    image_counts: dict | None = None


def source_batches(source: TaskSource, batch_size: int, rank: int = 0, world_size: int = 1) -> Iterator[RowBatch]:
    """This rank's rows of `source`, in order, every row once, in batches (the last may be short). A row's
    position is its index in a map-style source, and `place in this rank's stream * world_size + rank` in a
    streaming one (the source's order when the stream is split row by row across ranks)."""
    if source.is_streaming:
        rows = source.stream(seed=0, rank=rank, world_size=world_size, shuffle=False, buffer_size=1)
        examples, positions = [], []
        for place, row in enumerate(rows):
            examples.append(source.example(row, place * world_size + rank))
            positions.append(place * world_size + rank)
            if len(examples) == batch_size:
                yield RowBatch(examples, positions)
                examples, positions = [], []
        if examples:
            yield RowBatch(examples, positions)
        return
    indices = list(range(rank, source.num_rows, world_size))
    for start in range(0, len(indices), batch_size):
        chunk = indices[start : start + batch_size]
        yield RowBatch(source.rows(chunk), chunk)


class RowBatchCollator:
    """Collates a `RowBatch` (in a worker) with a `MultiTaskCollator(for_inference=True)`; `"positions"` gives
    the decoded rows' positions."""

    def __init__(self, collator: MultiTaskCollator):
        if not collator.for_inference:
            raise ValueError("the inference path needs MultiTaskCollator(..., for_inference=True)")
        self.collator = collator

    def __call__(self, batch: RowBatch) -> dict:
        collated = self.collator(batch.examples)
        collated["positions"] = [batch.positions[place] for place in collated.pop("kept")]
        return collated


def inference_loader(
    batches: Iterable[RowBatch], collator: MultiTaskCollator, *, num_workers: int = 0, pin_memory: bool = False
) -> torch.utils.data.DataLoader:
    """A DataLoader that decodes `batches` (read in this process) in `num_workers` worker processes."""
    return torch.utils.data.DataLoader(
        BatchPassthrough(),
        sampler=batches,
        batch_size=None,
        collate_fn=RowBatchCollator(collator),
        num_workers=num_workers,
        pin_memory=pin_memory,
    )


def padding_pixels(transform: ImageTransforms) -> torch.Tensor:
    """One black image as the transform gives it: the batch a rank runs while it waits for the others."""
    height, width = transform.size
    return transform.to_tensor([Image.new("RGB", (width, height))])


@torch.no_grad()
def run_batches(
    model: torch.nn.Module,
    loader: Iterable[dict],
    *,
    padding: torch.Tensor,
    prepare: Callable[[dict], dict],
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    tasks: Sequence[str] | None = None,
    with_labels: bool = False,
    distributed: bool = False,
    device: torch.device | str = "cpu",
) -> Iterator[BatchOutputs]:
    """
    Runs `model` on every batch of `loader` and yields each batch's `BatchOutputs`.

    Args:
        padding: the pixels of the padding batch (`padding_pixels`).
        prepare: moves a batch's model inputs to the model's device (the trainer's `_prepare_inputs`).
        autocast: the mixed-precision context of each forward.
        tasks: the heads to run (all of them by default).
        with_labels: return the batch's targets of the tasks its rows label (from the host batch: they never go
            to the device).
        distributed: this process is one of several ranks; they agree before each forward whether any still
            has a batch (one all-reduce of a flag on `device`), and those that have none run the padding batch.
    """
    model.eval()
    head_arguments = {"tasks": list(tasks)} if tasks is not None else {}
    batches = iter(loader)
    while True:
        batch = next(batches, None)
        if distributed:
            if not any_rank(batch is not None, device):
                break
        elif batch is None:
            break
        if batch is None or batch["pixel_values"] is None:
            with autocast():
                model(**prepare({"pixel_values": padding, **head_arguments}))
            if batch is not None:  # every photo of it was broken
                yield BatchOutputs(
                    np.zeros(0, np.int64), skipped_rows=batch["skipped_rows"], image_counts=batch.get("image_counts")
                )
            continue
        with autocast():
            outputs = model(**prepare({"pixel_values": batch["pixel_values"], **head_arguments}))
        names = list(tasks) if tasks is not None else list(outputs.logits)
        yield BatchOutputs(
            positions=np.asarray(batch["positions"], dtype=np.int64),
            logits=logits_to_host(outputs.logits, names, batch["pixel_values"].shape[0]),
            labels={name: batch["labels"][name].numpy() for name in names if name in batch["labels"]}
            if with_labels
            else {},
            skipped_rows=batch["skipped_rows"],
            image_counts=batch.get("image_counts"),
        )


def logits_to_host(logits: dict[str, torch.Tensor], names: Sequence[str], rows: int) -> dict[str, np.ndarray]:
    """Each task's logits, in one device-to-host copy."""
    blocks = [logits[name].detach().float().reshape(rows, -1) for name in names]
    host = torch.cat(blocks, dim=1).cpu().numpy()
    widths = np.cumsum([block.shape[1] for block in blocks])[:-1]
    return {
        name: part.reshape(logits[name].shape) for name, part in zip(names, np.split(host, widths, axis=1), strict=True)
    }


__all__ = [
    "BatchOutputs",
    "RowBatch",
    "RowBatchCollator",
    "inference_loader",
    "logits_to_host",
    "padding_pixels",
    "run_batches",
    "source_batches",
]
