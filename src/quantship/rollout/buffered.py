"""Counters and window observations kept in memory and written to the store in batches.

A store transaction per request was the gateway's largest cost after the HTTP stack
(docs/rollout.md, "Performance"), and it ran on the event loop that relays every
client's bytes. Requests now add to this buffer, which writes one transaction per
`flush_interval_s`, and before anything reads counters or the window, so a check or a
status always sees every request answered before it.

What a crash loses is bounded and stated: the requests answered in the last
`flush_interval_s` (default 1 s) are missing from the counters and the quality window.
Rollout state, audit records and webhook events are not buffered: they are written
before the change they record takes effect (store.cas_state).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import Any

from quantship.rollout.background import pause, stop_if_cancelled
from quantship.rollout.quality import Observation
from quantship.rollout.store import Store

log = logging.getLogger("quantship.rollout")


class BufferedStore:
    """A Store whose `record` only appends in memory; every other call goes to the store itself."""

    def __init__(self, store: Store, flush_interval_s: float):
        self.store = store
        self.flush_interval_s = flush_interval_s
        self._counters: Counter[str] = Counter()
        self._observations: list[Observation] = []
        self._lock = asyncio.Lock()  # one write at a time, so batches land in order

    def record(self, counters: dict[str, int], observation: Observation | None) -> None:
        """Constant time, never blocks: safe on the request path."""
        self._counters.update(counters)
        if observation is not None:
            self._observations.append(observation)

    async def flush(self) -> None:
        async with self._lock:
            if not (self._counters or self._observations):
                return
            counters, observations = dict(self._counters), self._observations
            self._counters, self._observations = Counter(), []
            try:
                await self.store.write(counters, observations)
            except BaseException:  # kept for the next flush, not lost to a store hiccup
                self._counters.update(counters)
                self._observations[:0] = observations
                raise

    async def run(self) -> None:
        """Flush every interval until cancelled."""
        while True:
            await pause(self.flush_interval_s)
            try:
                await self.flush()
            except Exception:
                stop_if_cancelled()
                log.exception("writing request counters to the store failed; retrying at the next interval")

    async def counters(self) -> dict[str, int]:
        await self.flush()
        return await self.store.counters()

    async def window(self, since_ts: float) -> list[Observation]:
        await self.flush()
        return await self.store.window(since_ts)

    async def close(self) -> None:
        try:
            await self.flush()
        finally:
            await self.store.close()

    def __getattr__(self, name: str) -> Any:  # state, audit, outbox, lease: unbuffered
        return getattr(self.store, name)
