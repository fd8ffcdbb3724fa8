"""Stage decisions: promote after enough clean data, roll back after N breached checks.

Each decision is a compare-and-set on the stored state, so it is applied once even
when replicas race; its audit record (and, for a rollback, the webhook event in the
outbox) is written in the same transaction. Only the replica that holds the
controller lease runs the periodic checks, over the window of observations that
all replicas write, and delivers the outbox.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from quantship.rollout.config import RolloutConfig
from quantship.rollout.metrics import Metrics
from quantship.rollout.monitor import BREACH, PASS, MonitorCheck, ProbeRound, check
from quantship.rollout.state import PAUSED, ROLLED_BACK, RUNNING, RolloutState
from quantship.rollout.store import Store

log = logging.getLogger("quantship.rollout")


class Conflict(Exception):
    """An admin action that the current state does not allow (HTTP 409)."""


class Controller:
    def __init__(
        self, config: RolloutConfig, store: Store, metrics: Metrics, circuit_open: Callable[[], bool],
        live_kl_min_samples: Callable[[], int | None] = lambda: None,
    ):
        self.config = config
        self.store = store
        self.metrics = metrics
        self.circuit_open = circuit_open
        self.live_kl_min_samples = live_kl_min_samples  # None while the control cannot score (judge.py)
        self.owner = uuid.uuid4().hex
        self.state: RolloutState | None = None
        self.last_check: MonitorCheck | None = None
        self.probes: ProbeRound | None = None
        self.leader = False  # holds the controller lease: runs checks, probes and webhook delivery
        self.outbox_ready = asyncio.Event()  # set when a change queued a webhook event

    async def start(self) -> RolloutState:
        now = time.time()
        initial = RolloutState(
            experiment=self.config.experiment, stage=self.config.initial_stage,
            stage_entered_at=now, clean_since=now, updated_at=now,
        )
        self.state = await self.store.init_state(initial)
        if self.state.stage >= len(self.config.stages):
            raise ValueError(f"stored stage {self.state.stage} does not exist in this config's stages")
        self._export()
        return self.state

    def fraction(self, state: RolloutState | None = None) -> float:
        state = state or self.state
        if state is None or state.status == ROLLED_BACK:
            return 0.0
        return self.config.stages[state.stage].fraction

    async def refresh(self) -> None:
        self.state = await self.store.load_state()
        self._export()

    def _export(self) -> None:
        self.metrics.stage.set(self.state.stage)
        self.metrics.fraction.set(self.fraction())
        self.metrics.rolled_back.set(1 if self.state.status == ROLLED_BACK else 0)

    async def _transition(
        self, change: Callable[[RolloutState], RolloutState | None],
        audit: Callable[[RolloutState], dict[str, Any]] | None = None, notify: str | None = None,
    ) -> RolloutState | None:
        """Apply `change` to the freshest state with compare-and-set; None when it declines.

        `audit` builds the audit record from the new state; `notify` names the webhook event
        to queue with it (when a webhook is configured). All three are stored at once.
        """
        for _ in range(20):
            current = await self.store.load_state()
            proposed = change(current.model_copy(deep=True))
            if proposed is None:
                self.state = current
                self._export()
                return None
            proposed.version = current.version + 1
            proposed.updated_at = time.time()
            record = audit(proposed) if audit else None
            outbox = {"id": uuid.uuid4().hex, "event": notify, **record} if notify and record and self.config.webhook_url else None
            if await self.store.cas_state(current.version, proposed, record, outbox):
                self.state = proposed
                self._export()
                if outbox:
                    self.outbox_ready.set()
                return proposed
        raise RuntimeError("rollout state kept changing under this replica; check the store")

    async def tick(self, now: float | None = None) -> MonitorCheck | None:
        """One periodic check; only the lease holder decides, the others just refresh."""
        now = time.time() if now is None else now
        await self.refresh()
        self.leader = await self.store.acquire_lease(self.owner, self.config.lease_s)
        if not self.leader:
            return None
        await self.store.prune(now - self.config.window_seconds)
        result = await self.evaluate(now)
        self.metrics.observe_check(result)
        self.last_check = result
        if self.state.status == ROLLED_BACK:
            return result
        if result.status == BREACH:
            await self._breached(result, now)
        elif result.status == PASS:
            await self._passed(now)
        return result

    async def evaluate(self, now: float) -> MonitorCheck:
        """The monitor's check of the window ending now: what a tick decides on and /rollout/analysis shows."""
        cfg = self.config
        window = await self.store.window(now - cfg.window_seconds)
        return check(window, cfg.thresholds, cfg.window_min_samples, self.circuit_open(), self.probes,
                     self.live_kl_min_samples())

    async def stage_samples(self) -> int:
        """Treatment responses since the current stage began (the promotion rule's count)."""
        return (await self.store.counters()).get(f"stage.{self.state.stage}.treatment", 0)

    async def _breached(self, result: MonitorCheck, now: float) -> None:
        def count(state: RolloutState) -> RolloutState | None:
            if state.status == ROLLED_BACK:
                return None
            state.consecutive_breaches += 1
            state.clean_since = now
            state.reasons = result.reasons
            return state

        state = await self._transition(count)
        if state is not None and state.consecutive_breaches >= self.config.breach_checks:
            await self.rollback("monitor", result.reasons, check=result.to_dict())

    async def _passed(self, now: float) -> None:
        if self.state.consecutive_breaches:
            await self._transition(lambda s: _with(s, consecutive_breaches=0, reasons=[]) if s.status != ROLLED_BACK else None)
        state, cfg = self.state, self.config
        if not cfg.auto_promote or state.status != RUNNING or self.fraction() == 0:
            return
        if state.stage >= len(cfg.stages) - 1 or now - state.clean_since < cfg.min_stage_seconds:
            return
        samples = await self.stage_samples()
        if samples >= cfg.min_samples:
            await self.promote("monitor", f"{samples} treatment samples, every check passing for {now - state.clean_since:.0f}s")

    async def promote(self, actor: str, reason: str = "") -> RolloutState:
        last = len(self.config.stages) - 1

        def step(state: RolloutState) -> RolloutState:
            if state.status == ROLLED_BACK:
                raise Conflict("the rollout was rolled back; start a new experiment name to try again")
            if state.stage >= last:
                raise Conflict(f"already at the last stage ({self.config.stages[last].name})")
            now = time.time()
            return _with(state, stage=state.stage + 1, stage_entered_at=now, clean_since=now, consecutive_breaches=0, reasons=[])

        return await self._transition(step, self._audit("promote", actor, [reason] if reason else []))

    async def pause(self, actor: str) -> RolloutState:
        def hold(state: RolloutState) -> RolloutState | None:
            if state.status == ROLLED_BACK:
                raise Conflict("the rollout was rolled back; there is nothing to pause")
            return None if state.status == PAUSED else _with(state, status=PAUSED)

        await self._transition(hold, self._audit("pause", actor, []))
        return self.state

    async def resume(self, actor: str) -> RolloutState:
        def go(state: RolloutState) -> RolloutState | None:
            if state.status == ROLLED_BACK:
                raise Conflict("the rollout was rolled back; start a new experiment name to try again")
            return None if state.status == RUNNING else _with(state, status=RUNNING, clean_since=time.time())

        await self._transition(go, self._audit("resume", actor, []))
        return self.state

    async def rollback(self, actor: str, reasons: list[str], check: dict[str, Any] | None = None) -> RolloutState:
        """All traffic to control, exactly once: a second caller finds it done and does nothing."""
        audit = self._audit("rollback", actor, reasons, check=check)

        def rollback(state: RolloutState) -> dict[str, Any]:
            record = audit(state)
            return {**record, "from_stage": record["stage_name"], "consecutive_breaches": state.consecutive_breaches}

        state = await self._transition(
            lambda s: None if s.status == ROLLED_BACK else _with(s, status=ROLLED_BACK, reasons=reasons), rollback, notify="rollback"
        )
        if state is None:
            return self.state
        self.metrics.rollbacks.labels("automatic" if actor == "monitor" else "manual").inc()
        log.warning("rollout %s rolled back by %s: %s", self.config.experiment, actor, "; ".join(reasons))
        return state

    def _audit(self, action: str, actor: str, reasons: list[str], **extra: Any) -> Callable[[RolloutState], dict[str, Any]]:
        """The audit record of `action`, built from the state it produces."""

        def record(state: RolloutState) -> dict[str, Any]:
            return {
                "ts": time.time(), "experiment": self.config.experiment, "action": action, "actor": actor,
                "reasons": reasons, "stage": state.stage, "stage_name": self.config.stages[state.stage].name,
                "status": state.status, "fraction": self.fraction(state), **extra,
            }

        return record


def _with(state: RolloutState, **changes: Any) -> RolloutState:
    return state.model_copy(update=changes)
