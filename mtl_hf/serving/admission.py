"""What `mtl-hf serve` lets in, and how much of its memory a request may take.

- `check_api_key`: with a shared secret set, a request without it is refused before its body is read.
- `Admission`: photos held by the server (decoding, waiting for a forward, in one) are counted; a request that would
  take the count over `max_queued_images` is refused (503) before any of its photos is decoded.
- `Decoders`: decoding runs on `decode_workers` threads, no more. A decode whose request is past its deadline is not
  started; one already running when the deadline passes is awaited (at most one photo a request, bounded by
  `--max_pixels`) before the request answers 504, so none runs on after its request has ended.

Memory is then bounded by the settings: about `max_connections x max_upload_bytes` of uploads, `decode_workers x
max_pixels x 3` bytes of decoded photos, and `max_queued_images` photos at the model's size.
"""

from __future__ import annotations

import asyncio
import hmac
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


class ServingRefusal(Exception):
    """A request the server refuses: its HTTP status, a message naming the problem, and headers to send."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, dict(headers or {})


class PastDeadline(Exception):
    """The request's time ran out before this step started."""


def check_api_key(expected: str | None, authorization: str | None, api_key_header: str | None) -> None:
    """Refuses (401) a request that does not carry `expected` as `Authorization: Bearer KEY` or `X-API-Key: KEY`."""
    if expected is None:
        return
    given = api_key_header
    if given is None and authorization and authorization[:7].lower() == "bearer ":
        given = authorization[7:].strip()
    # compare_digest: the time taken does not tell how much of a guess was right.
    if given is None or not hmac.compare_digest(given.encode(), expected.encode()):
        raise ServingRefusal(
            401,
            "this server needs its API key: send 'Authorization: Bearer KEY' or 'X-API-Key: KEY'",
            {"WWW-Authenticate": "Bearer"},
        )


class Admission:
    """Counts the photos the server holds and refuses a request that would take it past `limit`."""

    def __init__(self, limit: int, retry_after_s: int = 1):
        self.limit, self.retry_after_s = limit, retry_after_s
        self.held = 0
        self.refused = 0  # requests refused as busy, for /health

    def admit(self, photos: int) -> None:
        if self.held + photos > self.limit:
            self.refused += 1
            raise ServingRefusal(
                503,
                f"the server holds {self.held} photos and takes at most {self.limit} at once "
                f"(--max_queued_images): retry in {self.retry_after_s} s",
                {"Retry-After": str(self.retry_after_s)},
            )
        self.held += photos

    def release(self, photos: int) -> None:
        self.held -= photos


class Decoders:
    """At most `workers` decodes at once, on their own threads; none started past its request's deadline."""

    def __init__(self, workers: int):
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode")
        self._lock = threading.Lock()
        self.running = 0  # decodes in progress, for /health
        self.skipped = 0  # decodes not started because their request was past its deadline

    async def run(self, work: Callable[[], T], deadline: float) -> T:
        """`work()` on a decode thread, unless `deadline` (the event loop's clock) has passed when a thread is
        free (`PastDeadline`)."""
        loop = asyncio.get_running_loop()

        def guarded() -> T:
            with self._lock:
                if loop.time() >= deadline:  # the loop's clock is monotonic and readable from any thread
                    self.skipped += 1
                    raise PastDeadline
                self.running += 1
            try:
                return work()
            finally:
                with self._lock:
                    self.running -= 1

        # shield: a cancelled request still waits for its decode, so none outlives it.
        future = loop.run_in_executor(self._executor, guarded)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            await asyncio.wait([future])
            raise

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


__all__ = ["Admission", "Decoders", "PastDeadline", "ServingRefusal", "check_api_key"]
