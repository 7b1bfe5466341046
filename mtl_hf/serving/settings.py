"""The limits and batching of `mtl-hf serve`: a dataclass that imports nothing heavy, for the command's parser."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ServeSettings:
    """Limits and batching of the server (the `mtl-hf serve` flags; docs/serving.md says what each bounds).

    Args:
        max_batch_size: photos per forward, from all requests.
        max_wait_ms: the longest a photo waits for others to share its forward.
        max_upload_bytes: the largest request body.
        max_pixels: the most pixels a photo may have (read from its header, before decoding).
        max_request_pixels: the most pixels the photos of one request may have together.
        max_images: photos per request.
        max_queued_images: photos the server holds at once (decoding, waiting, in a forward); a request that would
            pass it gets a 503 with Retry-After before any of its photos is decoded.
        decode_workers: photos decoded at once, over all requests.
        max_connections: requests the server handles at once (uvicorn's `limit_concurrency`; more get a 503).
        request_timeout: seconds before a request gets a 504, upload included.
        api_key: a shared secret every request but `/health` and the page must carry (None: no key).
    """

    max_batch_size: int = 32
    max_wait_ms: float = 10.0
    max_upload_bytes: int = 20_000_000
    max_pixels: int = 40_000_000
    max_request_pixels: int = 100_000_000
    max_images: int = 16
    max_queued_images: int = 256
    decode_workers: int = 2
    max_connections: int = 64
    request_timeout: float = 30.0
    api_key: str | None = field(default=None, repr=False)


__all__ = ["ServeSettings"]
