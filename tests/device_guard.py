"""Running a training step on the `meta` device, as strictly as a GPU would run it.

A `meta` tensor has a shape and a device but no data, so any copy of one to the host
(`.cpu()`, `.item()`, `.tolist()`, `bool(t)`, a Python `if` on a tensor) raises: running the step on
`meta` finds every hidden device -> host transfer. `meta` is laxer than CUDA about mixing devices
in one op (`meta_tensor += cpu_tensor` passes), so `DeviceMixGuard` refuses any op whose tensors
sit on two devices, except 0-dim CPU tensors, which CUDA accepts too.
"""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


class DeviceMixError(AssertionError):
    pass


class DeviceMixGuard(TorchDispatchMode):
    """Raises `DeviceMixError` on any op that takes tensors from two devices (0-dim CPU tensors allowed)."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        devices = {
            str(t.device)
            for t in tree_leaves((args, kwargs))
            if isinstance(t, torch.Tensor) and not (t.device.type == "cpu" and t.dim() == 0)
        }
        if len(devices) > 1:
            tensors = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
            shapes = [(tuple(t.shape), str(t.device)) for t in tensors]
            raise DeviceMixError(f"{func} mixes devices {sorted(devices)}: {shapes}")
        return func(*args, **kwargs)
