"""Load shapes: concurrency caps hold, Poisson arrivals are Poisson and on schedule."""

from __future__ import annotations

import asyncio
import math

import numpy as np
import pytest

from quantship.bench.load import fixed_concurrency, poisson_arrivals, poisson_offsets
from quantship.bench.models import RequestRecord


def fake_sender(delay_s: float, log: list):
    in_flight = 0

    async def send(index: int, scheduled: float | None) -> RequestRecord:
        nonlocal in_flight
        in_flight += 1
        log.append(in_flight)
        await asyncio.sleep(delay_s)
        in_flight -= 1
        return RequestRecord(endpoint="a", level=1, phase="measure", start_s=0.0, scheduled_s=scheduled)

    return send


def test_fixed_concurrency_keeps_exactly_the_cap_in_flight():
    seen: list[int] = []
    records, duration = asyncio.run(fixed_concurrency(fake_sender(0.01, seen), count=20, concurrency=4))
    assert len(records) == 20 and duration > 0
    assert max(seen) == 4
    with pytest.raises(ValueError):
        asyncio.run(fixed_concurrency(fake_sender(0, []), count=1, concurrency=0))


def test_fewer_requests_than_concurrency_sends_each_once():
    seen: list[int] = []
    records, _ = asyncio.run(fixed_concurrency(fake_sender(0.0, seen), count=3, concurrency=16))
    assert len(records) == 3 and max(seen) == 3


def test_poisson_arrival_counts_are_statistically_sane():
    rate, count = 4.0, 4000
    offsets = np.asarray(poisson_offsets(rate, count, seed=11))
    assert offsets[0] == 0.0 and np.all(np.diff(offsets) >= 0)
    gaps = np.diff(offsets)
    # Mean gap 1/rate within 4 standard errors (exponential: sd = mean).
    assert abs(gaps.mean() - 1 / rate) < 4 * (1 / rate) / math.sqrt(gaps.size)
    # Arrivals per 1 s window: Poisson, so mean ~ rate and variance ~ mean (dispersion ~ 1).
    windows = np.bincount(offsets[offsets < math.floor(offsets[-1])].astype(int))
    assert abs(windows.mean() - rate) < 4 * math.sqrt(rate / windows.size)
    assert 0.8 < windows.var() / windows.mean() < 1.2
    # Exponential gaps: share longer than one mean gap is e^-1.
    assert abs((gaps > 1 / rate).mean() - math.exp(-1)) < 0.03
    assert poisson_offsets(rate, 10, seed=1) == poisson_offsets(rate, 10, seed=1)
    with pytest.raises(ValueError):
        poisson_offsets(0, 10, seed=1)


def test_poisson_sends_follow_the_schedule_open_loop():
    seen: list[int] = []
    offsets = poisson_offsets(50.0, 40, seed=2)
    # Each request takes far longer than a gap: an open loop piles them up.
    records, duration = asyncio.run(poisson_arrivals(fake_sender(0.3, seen), offsets))
    assert sorted(r.scheduled_s for r in records) == offsets
    assert max(seen) > 10
    assert duration >= offsets[-1]


def test_poisson_with_a_cap_never_exceeds_it():
    seen: list[int] = []
    records, _ = asyncio.run(
        poisson_arrivals(fake_sender(0.05, seen), poisson_offsets(100.0, 30, seed=3), max_concurrency=3)
    )
    assert len(records) == 30 and max(seen) == 3
