"""Load shapes: a fixed number of requests in flight, or Poisson arrivals at a rate.

Both take `send(index, scheduled_s)` and return the records plus the wall time
from the first send to the last completion, which throughput divides by.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import numpy as np

from quantship.bench.models import RequestRecord

Send = Callable[[int, float | None], Awaitable[RequestRecord]]


async def fixed_concurrency(send: Send, count: int, concurrency: int) -> tuple[list[RequestRecord], float]:
    """Keep `concurrency` requests in flight until `count` have been sent."""
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    records: list[RequestRecord] = []
    next_index = 0

    async def worker() -> None:
        nonlocal next_index
        while next_index < count:
            index = next_index
            next_index += 1
            records.append(await send(index, None))

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(min(concurrency, count))))
    return records, time.perf_counter() - started


def poisson_offsets(rate: float, count: int, seed: int) -> list[float]:
    """Arrival times (s from the start) of a Poisson process: exponential gaps, first at 0."""
    if rate <= 0:
        raise ValueError("rate must be positive")
    gaps = np.random.default_rng(seed).exponential(1.0 / rate, size=max(count - 1, 0))
    return [0.0, *np.cumsum(gaps).tolist()][:count]


async def poisson_arrivals(
    send: Send, offsets: list[float], max_concurrency: int | None = None
) -> tuple[list[RequestRecord], float]:
    """Send request i at `offsets[i]` whatever is still in flight (open loop).

    `max_concurrency` caps requests in flight, as a client connection pool would;
    arrivals that find the cap full wait, and latencies are timed from the actual
    send (as vLLM's benchmark does), so that wait shows in throughput, not in TTFT.
    """
    gate = asyncio.Semaphore(max_concurrency) if max_concurrency else None
    started = time.perf_counter()

    async def one(index: int, offset: float) -> RequestRecord:
        delay = started + offset - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if gate is None:
            return await send(index, offset)
        async with gate:
            return await send(index, offset)

    records = await asyncio.gather(*(one(i, offset) for i, offset in enumerate(offsets)))
    return list(records), time.perf_counter() - started
