"""The webhook outbox: written with the state change and its audit record, delivered until taken."""

from __future__ import annotations

import asyncio
import time

import pytest

from quantship.rollout.state import ROLLED_BACK, RolloutState
from quantship.rollout.store import RedisStore, SqliteStore, Store
from quantship.rollout.webhook import MAX_BACKOFF_S, WebhookOutbox
from tests.support.gateway import GatewayServer, make_config
from tests.support.requires import check


@pytest.fixture(params=["sqlite", "redis"])
def store_factory(request, tmp_path):
    if request.param == "sqlite":
        return lambda: SqliteStore(tmp_path / "rollout.db", "exp1")
    check("redis-server")
    url = request.getfixturevalue("redis_url")
    return lambda: RedisStore(url, "exp1")


def _state(version: int = 0, **changes) -> RolloutState:
    now = time.time()
    return RolloutState(experiment="exp1", stage=1, stage_entered_at=now, clean_since=now, version=version, **changes)


def test_state_audit_and_outbox_are_written_together_or_not_at_all(store_factory):
    async def run() -> None:
        store: Store = store_factory()
        await store.init_state(_state())
        audit = {"ts": time.time(), "action": "rollback"}
        event = {"id": "e1", "event": "rollback"}
        assert await store.cas_state(0, _state(1, status=ROLLED_BACK), audit, event)
        # A replica that lost the race writes none of the three.
        assert not await store.cas_state(0, _state(1), {"ts": time.time(), "action": "promote"}, {"id": "e2", "event": "x"})
        assert (await store.load_state()).status == ROLLED_BACK
        assert [e["action"] for e in await store.audit_log()] == ["rollback"]
        assert [e["id"] for e in await store.pending_events()] == ["e1"]
        await store.close()
        reopened = store_factory()  # what a restarted gateway finds
        assert [e["id"] for e in await reopened.pending_events()] == ["e1"]
        await reopened.mark_delivered("e1")
        assert await reopened.pending_events() == []
        assert await reopened.audit_log(0) == []  # limit 0 is an empty page, not the whole log
        await reopened.close()

    asyncio.run(run())


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_delivery_retries_with_backoff_and_the_receiver_sees_each_event_once(tmp_path, webhook):
    async def run() -> None:
        store = SqliteStore(tmp_path / "rollout.db", "exp1")
        await store.init_state(_state())
        await store.cas_state(0, _state(1), {"ts": 1.0, "action": "rollback"}, {"id": "e1", "event": "rollback"})
        clock = Clock()
        outbox = WebhookOutbox(webhook.url, 2, 1.0, store, clock)
        webhook.down = True
        assert await outbox.deliver_due() == 0 and webhook.attempts == 1
        assert await outbox.deliver_due() == 0 and webhook.attempts == 1  # backing off: not due yet
        clock.now = 1.0
        assert await outbox.deliver_due() == 0 and webhook.attempts == 2
        clock.now = 2.9  # the second retry waits 2 s
        assert await outbox.deliver_due() == 0 and webhook.attempts == 2
        webhook.down = False
        webhook.lose_acks = 1  # taken, but the answer is lost: it must be sent again, with the same id
        clock.now = 3.0
        assert await outbox.deliver_due() == 0 and webhook.attempts == 3
        clock.now = 7.0
        assert await outbox.deliver_due() == 1 and webhook.attempts == 4
        assert await outbox.deliver_due() == 0 and webhook.attempts == 4  # delivered: never again
        assert [e["id"] for e in webhook.events] == ["e1", "e1"]
        assert [e["id"] for e in webhook.unique()] == ["e1"]
        assert outbox.backoff(30) == MAX_BACKOFF_S
        await store.close()

    asyncio.run(run())


def test_two_replicas_on_redis_deliver_a_rollback_once(tmp_path, request, control, treatment, webhook):
    check("redis-server")
    url = request.getfixturevalue("redis_url")
    config = make_config(tmp_path, control.url, treatment.url, store=url, webhook_url=webhook.url, webhook_retry_s=0.05)
    with GatewayServer(config) as a, GatewayServer(config) as b:
        a.wait_for(lambda s: a.gateway.controller.leader or b.gateway.controller.leader)
        follower = b if a.gateway.controller.leader else a
        follower.admin("rollback", reason="from the follower")  # queued by one replica, delivered by the leader
        deadline = time.monotonic() + 20
        while not webhook.events:
            assert time.monotonic() < deadline, "the rollback was never delivered"
            time.sleep(0.02)
        for _ in range(10):  # a few more check intervals: room for a wrong second delivery
            a.wait_for(lambda s: True)
        assert len(webhook.events) == 1 and webhook.events[0]["reasons"] == ["from the follower"]
        assert asyncio.run(_pending(url)) == []


async def _pending(url: str) -> list:
    store = RedisStore(url, "exp1")
    try:
        return await store.pending_events()
    finally:
        await store.close()
