"""Every collective mtl_hf's own code calls (Trainer's and accelerate's are theirs), and the rule they keep.

The rule: every rank calls the same collectives, in the same order, on tensors of the same shape and dtype, and
decides whether to call one from facts that are the same on every rank (the step, the plan of the task mixture,
the structure of a batch: which tasks it serves), never from a value only it holds (a loss, a count, whether its
own data ran out). A value that decides must first be made common by a collective (`any_rank`). Break it and the
ranks wait on each other for ever, or sum tensors that do not belong together.

Who calls what:
  balancing/step_losses.py     all_reduce_sum: each task's loss terms, once a step (the union batch's loss)
  balancing/gradient_path.py   all_reduce_sum: the Gramian (representation space), the per-task gradients
                               (parameter space)
  training/callbacks.py        all_reduce_sum: the gradients of the weighting's own parameters
  training/tallies.py          all_reduce_sum: logged losses, weights and skipped photos, at each logging step
  inference/batches.py         any_rank: whether a rank still has a batch, so that all make the same forwards
  training/evaluation.py       gather_from_ranks: every rank's scored rows, in rank order
  utils/output_dir.py          barrier: the output folder claimed before any rank writes

A process that started a process group ends it (`destroy_process_group_at_exit`, registered by MultiTaskTrainer).
Left to the interpreter's teardown, a rank ended well and then aborted, about one run in 16 on 2 busy cores
(SIGABRT, "terminate called without an active exception"): a Gloo worker thread that had finished the last
all-gather still held its tensors, which Python created, and releasing them needs the GIL, which a finalising
interpreter no longer hands out. The handler lets those threads run before Python goes.
"""

from __future__ import annotations

import atexit
import sys
import time
from typing import Any

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    """True when a process group of more than one rank is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sums `tensor` over the ranks, in place (nothing to do in a single process); returns it."""
    if is_distributed():
        dist.all_reduce(tensor)
    return tensor


def any_rank(flag: bool, device: torch.device | str) -> bool:
    """Whether `flag` holds on any rank (its own value in a single process): a local fact made common, one host
    copy."""
    if not is_distributed():
        return flag
    value = torch.tensor([int(flag)], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def gather_from_ranks(payload: Any, distributed: bool) -> list[Any]:
    """Every rank's `payload`, in rank order (accelerate's object gather); `[payload]` in one process."""
    if not distributed:
        return [payload]
    from accelerate.utils import gather_object

    return gather_object([payload])


def barrier() -> None:
    """Waits for every rank (nothing to wait for in a single process)."""
    if is_distributed():
        dist.barrier()


_exit_handler_registered = False


def destroy_process_group_at_exit() -> None:
    """Destroys the process group when the interpreter exits normally, while Python is still whole. Not after an
    uncaught exception: the other ranks may then be waiting in a collective, and destroying the group under them
    can hang (the launcher ends them instead). Registering twice registers once; without a group, nothing."""
    global _exit_handler_registered
    if not _exit_handler_registered and dist.is_available() and dist.is_initialized():
        atexit.register(_destroy_process_group_unless_failing)
        _exit_handler_registered = True


def _destroy_process_group_unless_failing() -> None:
    failing = getattr(sys, "last_exc", None) or getattr(sys, "last_value", None)  # set for an uncaught exception
    if failing is None and dist.is_available() and dist.is_initialized():
        # No collective here (a barrier would hang on a rank that left on an error): the GIL is released for a
        # moment instead, long enough for a worker thread to take it and drop the work it has finished.
        time.sleep(_WORKER_DRAIN_SECONDS)
        dist.destroy_process_group()


_WORKER_DRAIN_SECONDS = 0.1


__all__ = [
    "all_reduce_sum",
    "any_rank",
    "barrier",
    "destroy_process_group_at_exit",
    "gather_from_ranks",
    "is_distributed",
    "world_size",
]
