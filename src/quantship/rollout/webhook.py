"""Delivers the outbox's events to `webhook_url`: retried with backoff until the receiver takes them.

The event is stored in the same transaction as the rollback it reports, so a crash
or a receiver that is down delays the notification but never loses it. Every
attempt carries the same event id (body `id`, header `Idempotency-Key`): a
receiver that deduplicates by it sees each event exactly once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import httpx

from quantship.rollout.store import Store

log = logging.getLogger("quantship.rollout")
MAX_BACKOFF_S = 300.0


class WebhookOutbox:
    def __init__(self, url: str, timeout_s: float, retry_s: float, store: Store, clock: Callable[[], float] = time.monotonic):
        self.url = url
        self.timeout_s = timeout_s
        self.retry_s = retry_s
        self.store = store
        self._clock = clock
        self._retry: dict[str, tuple[int, float]] = {}  # event id -> (failed attempts, next attempt); per process

    def backoff(self, failures: int) -> float:
        return min(MAX_BACKOFF_S, self.retry_s * 2 ** (failures - 1))

    async def deliver_due(self) -> int:
        """One pass over the pending events whose retry time has come; returns how many were delivered."""
        now = self._clock()
        due = [e for e in await self.store.pending_events() if self._retry.get(e["id"], (0, now))[1] <= now]
        if not due:
            return 0
        delivered = 0
        async with httpx.AsyncClient(timeout=self.timeout_s) as client:
            for event in due:
                try:
                    response = await client.post(self.url, json=event, headers={"idempotency-key": event["id"]})
                    response.raise_for_status()
                except httpx.HTTPError as error:
                    failures = self._retry.get(event["id"], (0, now))[0] + 1
                    self._retry[event["id"]] = (failures, now + self.backoff(failures))
                    log.error("webhook %s: event %s not delivered (attempt %d, next in %.0fs): %s",
                              self.url, event["id"], failures, self.backoff(failures), error)
                    continue
                await self.store.mark_delivered(event["id"])
                self._retry.pop(event["id"], None)
                delivered += 1
        return delivered
