"""The PyTorch engine's precision for answering (`--dtype`): `auto` (bf16 on an accelerator that has it, full
precision on the CPU), `fp32`, or `bf16` (autocast), which on a CPU needs the instructions that make it faster than
fp32 (AVX512-BF16 or AMX) and is refused elsewhere. A bf16 forward chosen by a user answers only behind the
precision gate (`inference/precision_gate.py`, `commands/precision.py`)."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from ..errors import UserError

if TYPE_CHECKING:
    import torch

DTYPES = ("auto", "fp32", "bf16")


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX): elsewhere autocast emulates it, slower than
    fp32."""
    import torch  # here, not above: the commands' parsers read DTYPES without loading torch

    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)


def check_dtype(dtype: str, device_type: str) -> None:
    """A bf16 forward where the hardware has none is refused in one line."""
    import torch

    if dtype != "bf16":
        return
    if device_type == "cuda":
        if not torch.cuda.is_bf16_supported():
            raise UserError("--dtype bf16: this GPU has no bf16; use --dtype fp32")
    elif not cpu_has_bf16():
        raise UserError(
            "--dtype bf16: this CPU has neither AVX512-BF16 nor AMX, so bf16 would be emulated and slower than fp32; "
            "use --dtype fp32 (or an int8 graph: mtl-hf export MODEL OUT --quantize int8)"
        )


def forward_precision(dtype: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The autocast of a forward at `dtype` (one of `DTYPES`) on `device`."""
    import torch

    if dtype == "bf16" or (dtype == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported()):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


__all__ = ["DTYPES", "check_dtype", "cpu_has_bf16", "forward_precision"]
