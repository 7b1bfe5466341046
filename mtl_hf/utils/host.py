"""The one way values leave the accelerator during training.

A device -> host copy makes the host wait for every kernel queued before it, so the training
step makes as few as it can: one per optimizer step for every method (the loss guard's K
booleans: were the step's task losses finite?), one more for a gradient method (its K x K
Gramian, solved on the host), and one per logging step for the per-task logs. They all go
through `to_host`, which is what tests/test_device_step.py watches on the `meta` device.
"""

from __future__ import annotations

import torch


def to_host(tensor: torch.Tensor) -> torch.Tensor:
    """A CPU copy of `tensor` (detached). Waits for the device to compute it."""
    return tensor.detach().to("cpu")


__all__ = ["to_host"]
