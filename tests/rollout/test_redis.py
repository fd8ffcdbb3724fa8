"""Two gateway replicas sharing rollout state through a real redis-server."""

from __future__ import annotations

import asyncio

from quantship.rollout.controller import Controller
from quantship.rollout.metrics import Metrics
from quantship.rollout.store import RedisStore
from tests.support.gateway import GatewayServer, chat, make_config
from tests.support.requires import requires

pytestmark = requires("redis-server")


def test_concurrent_rollbacks_from_many_replicas_apply_once(tmp_path, redis_url):
    config = make_config(tmp_path, "http://127.0.0.1:1", "http://127.0.0.1:2", store=redis_url)

    async def run() -> tuple[int, list]:
        replicas = [Controller(config, RedisStore(redis_url, config.experiment), Metrics(), lambda: False) for _ in range(8)]
        for replica in replicas:
            await replica.start()
        await asyncio.gather(*(r.rollback(f"replica-{i}", ["race"]) for i, r in enumerate(replicas)))
        events = await replicas[0].store.audit_log()
        applied = sum(r.metrics.rollbacks.labels("manual")._value.get() for r in replicas)
        for replica in replicas:
            await replica.store.close()
        return applied, events

    applied, events = asyncio.run(run())
    assert applied == 1 and [e["action"] for e in events] == ["rollback"]


def test_replicas_share_stage_counters_and_rollback(tmp_path, redis_url, control, treatment):
    config = make_config(tmp_path, control.url, treatment.url, store=redis_url, auto_promote=False)
    with GatewayServer(config) as a, GatewayServer(config) as b:
        for i in range(20):
            assert chat(a.url if i % 2 else b.url, f"user-{i}").status_code == 200
        # Each replica writes its counters once per flush_interval_s: b sees a's within that.
        b.wait_for(lambda s: sum(v for k, v in s["counters"].items() if k.startswith("requests.")) == 20, timeout_s=5)
        a.admin("promote", reason="replica a")
        assert b.admin("status")["stage_name"] == "75%"
        treatment.set_mode("loop")
        for i in range(120):
            chat(a.url if i % 2 else b.url, f"user-{i}")
        b.wait_for(lambda s: s["status"] == "rolled_back")
        a.wait_for(lambda s: s["status"] == "rolled_back")
        rollbacks = [e for e in a.admin("audit")["events"] if e["action"] == "rollback"]
        assert len(rollbacks) == 1  # one decision for both replicas
        assert {chat(a.url, "user-1").headers["x-quantship-variant"], chat(b.url, "user-2").headers["x-quantship-variant"]} == {"control"}
