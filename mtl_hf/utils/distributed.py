"""Whether this process trains among others, and the few collectives mtl_hf's own code calls."""

from __future__ import annotations

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


def barrier() -> None:
    """Waits for every rank (nothing to wait for in a single process)."""
    if is_distributed():
        dist.barrier()


__all__ = ["all_reduce_sum", "barrier", "is_distributed", "world_size"]
