"""The quality window as every replica sees it, through both stores.

A check reads only what was written since the previous one (store.py), so these are the
cases an incremental read could get wrong: another replica's rows, a late batch older
than rows already read, an earlier window start, and pruning everything old.
"""

from __future__ import annotations

import asyncio

import pytest

from quantship.rollout.quality import Observation
from quantship.rollout.store import RedisStore, SqliteStore
from tests.support.requires import requires


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=requires("redis-server"))])
def replicas(request, tmp_path):
    """Two stores on the same shared state, as two gateway replicas open it."""
    if request.param == "sqlite":
        return lambda: SqliteStore(tmp_path / "rollout.db", "exp")
    url = request.getfixturevalue("redis_url")
    return lambda: RedisStore(url, "exp")


def _obs(ts: float, tokens: int) -> Observation:
    return Observation(variant="treatment", ts=ts, ok=True, tokens=tokens)


def _seen(window: list[Observation]) -> list[tuple[float, int]]:
    return [(o.ts, o.tokens) for o in window]


def test_the_window_holds_every_replicas_rows_once_oldest_first(replicas):
    async def run():
        a, b = replicas(), replicas()
        await a.write({}, [_obs(100.0, 1), _obs(101.0, 2)])
        first = await a.window(50.0)
        await b.write({}, [_obs(103.0, 3)])
        await b.write({}, [_obs(100.5, 4)])  # a late batch: older than rows `a` has already read
        second = await a.window(50.0)
        later = await a.window(100.7)
        earlier = await a.window(0.0)  # before the start of the last read: the old rows again
        for store in (a, b):
            await store.close()
        return first, second, later, earlier

    first, second, later, earlier = asyncio.run(run())
    assert _seen(first) == [(100.0, 1), (101.0, 2)]
    assert _seen(second) == [(100.0, 1), (100.5, 4), (101.0, 2), (103.0, 3)]
    assert _seen(later) == [(101.0, 2), (103.0, 3)]
    assert _seen(earlier) == _seen(second)


def test_rows_written_after_everything_old_was_pruned_are_seen(replicas):
    async def run():
        a, b = replicas(), replicas()
        await a.write({}, [_obs(10.0, 1), _obs(11.0, 2)])
        assert _seen(await a.window(0.0)) == [(10.0, 1), (11.0, 2)]
        await a.prune(1000.0)  # the whole window is older than the cut
        emptied = await a.window(1000.0)
        await b.write({}, [_obs(1001.0, 3)])
        after = await a.window(1000.0)
        for store in (a, b):
            await store.close()
        return emptied, after

    emptied, after = asyncio.run(run())
    assert emptied == []
    assert _seen(after) == [(1001.0, 3)]
