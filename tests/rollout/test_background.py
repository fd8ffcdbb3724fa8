"""A background loop stops when cancelled, even when a library turns the cancel into its own error."""

from __future__ import annotations

import asyncio

from quantship.rollout.buffered import BufferedStore
from quantship.rollout.gateway import Gateway
from tests.support.gateway import make_config


async def _cancel_turned_into_an_error() -> None:
    """What redis-py's asyncio client did to a gateway shutting down mid-call."""
    try:
        await asyncio.sleep(30)
    except asyncio.CancelledError:
        raise ConnectionError("connection closed by a cancel") from None


async def _cancel_in_a_step(loop_coroutine) -> bool:
    task = asyncio.create_task(loop_coroutine)
    await asyncio.sleep(0.3)  # inside a step (the loops run every 0.1 s here)
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=5)
    return bool(done) and task.cancelled()


def _stops_when_cancelled(loop_coroutine) -> None:
    loop = asyncio.new_event_loop()  # not asyncio.run: it would wait forever for a loop that ignores its cancel
    try:
        assert loop.run_until_complete(_cancel_in_a_step(loop_coroutine)), "the loop went on after its cancel"
    finally:
        loop.close()


def test_the_check_loop_stops_when_its_cancel_comes_back_as_an_error(tmp_path):
    gateway = Gateway(make_config(tmp_path, "http://127.0.0.1:9", "http://127.0.0.1:9"))
    gateway.controller.tick = _cancel_turned_into_an_error
    _stops_when_cancelled(gateway._check_loop())


def test_the_store_flush_loop_stops_when_its_cancel_comes_back_as_an_error():
    class Store:
        async def write(self, counters, observations):
            await _cancel_turned_into_an_error()

    buffered = BufferedStore(Store(), flush_interval_s=0.1)
    buffered.record({"requests.control": 1}, None)
    _stops_when_cancelled(buffered.run())
    assert buffered._counters["requests.control"] == 1  # kept for the flush at close, not lost
