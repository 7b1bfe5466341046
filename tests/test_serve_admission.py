"""What `mtl-hf serve` lets in, tested without HTTP: the API key, the bound on photos held, decodes never started
past their request's deadline nor left running after it, and asyncio's timeout as Python 3.10 raises it."""

import asyncio
import threading
import time

import pytest
import torch

from mtl_hf.serving.admission import Admission, Decoders, PastDeadline, ServingRefusal, check_api_key
from mtl_hf.serving.batcher import DynamicBatcher

KEY = "0123456789abcdef-secret"


def test_the_api_key_is_asked_for_and_compared_whole():
    check_api_key(None, None, None)  # no key set: everyone
    check_api_key(KEY, f"Bearer {KEY}", None)
    check_api_key(KEY, None, KEY)
    for authorization, header in [(None, None), ("Bearer wrong", None), (None, KEY[:-1]), (f"Basic {KEY}", None)]:
        with pytest.raises(ServingRefusal) as refused:
            check_api_key(KEY, authorization, header)
        assert refused.value.status == 401 and refused.value.headers == {"WWW-Authenticate": "Bearer"}
        assert KEY not in refused.value.message


def test_admission_refuses_past_the_photos_held_and_lets_in_again_once_released():
    admission = Admission(limit=5)
    admission.admit(3)
    admission.admit(2)
    with pytest.raises(ServingRefusal) as refused:
        admission.admit(1)
    assert refused.value.status == 503 and refused.value.headers == {"Retry-After": "1"}
    assert "holds 5 photos" in refused.value.message and admission.refused == 1
    admission.release(3)
    admission.admit(3)
    assert admission.held == 5


def test_no_decode_starts_past_its_deadline_and_none_runs_on_after_its_request():
    """One decode thread, held by a first photo: the second request's decode waits for it, its deadline passes,
    and it never runs. A request cancelled while its decode runs waits for that decode before it ends."""
    decoders = Decoders(workers=1)
    release, started, calls = threading.Event(), threading.Event(), []

    def slow():
        started.set()
        release.wait(5)
        calls.append("slow")
        return "slow done"

    def never():
        calls.append("never")

    async def scenario():
        loop = asyncio.get_running_loop()
        first = asyncio.ensure_future(decoders.run(slow, loop.time() + 10))
        await asyncio.to_thread(started.wait, 5)
        second = asyncio.ensure_future(decoders.run(never, loop.time() + 0.05))
        await asyncio.sleep(0.2)  # the second's deadline passes while the thread is busy
        release.set()
        assert await first == "slow done"
        with pytest.raises(PastDeadline):
            await second
        # A request cancelled (e.g. the client went away) while its decode runs: the decode finishes first.
        release.clear()
        started.clear()
        third = asyncio.ensure_future(decoders.run(slow, loop.time() + 10))
        await asyncio.to_thread(started.wait, 5)
        third.cancel()
        await asyncio.sleep(0.1)
        assert not third.done() and decoders.running == 1
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await third
        assert decoders.running == 0

    asyncio.run(scenario())
    decoders.shutdown()
    assert calls == ["slow", "slow"] and decoders.skipped == 1


class Py310TimeoutError(Exception):
    """What `asyncio.wait_for` raises on Python 3.10: asyncio's own class, not the builtin TimeoutError."""


def test_the_batcher_survives_asyncio_timeouts_as_python_3_10_raises_them(monkeypatch):
    real_wait_for = asyncio.wait_for

    async def wait_for_310(awaitable, timeout):
        try:
            return await real_wait_for(awaitable, timeout)
        except TimeoutError:
            raise Py310TimeoutError from None

    monkeypatch.setattr(asyncio, "TimeoutError", Py310TimeoutError)
    monkeypatch.setattr(asyncio, "wait_for", wait_for_310)
    batcher = DynamicBatcher(lambda pixels: [float(p.sum()) for p in pixels], max_batch_size=4, max_wait_s=0.05)

    async def scenario():
        await batcher.start()
        try:
            started = time.monotonic()
            first = await real_wait_for(batcher.submit([torch.ones(2)]), 5)  # waited 50 ms for company, alone
            second = await real_wait_for(batcher.submit([torch.zeros(2), torch.ones(3)]), 5)
            return first, second, time.monotonic() - started
        finally:
            await batcher.stop()

    first, second, _ = asyncio.run(scenario())
    assert first == [2.0] and second == [0.0, 3.0] and batcher.batches == 2
