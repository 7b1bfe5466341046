"""The limits and batching of `mtl-hf serve`: a dataclass that imports nothing heavy, for the command's parser."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServeSettings:
    """Limits and batching of the server (the `mtl-hf serve` flags)."""

    max_batch_size: int = 32
    max_wait_ms: float = 10.0
    max_upload_bytes: int = 20_000_000
    max_pixels: int = 40_000_000
    max_images: int = 16
    request_timeout: float = 30.0


__all__ = ["ServeSettings"]
