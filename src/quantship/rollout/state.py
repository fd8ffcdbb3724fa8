"""The rollout state that must survive a kill -9: stage, status, breach streak.

Every change is a compare-and-set on `version`, so when several gateway replicas
(or a replica and an operator) act at once exactly one change wins: a rollback
happens once, a promotion moves one stage.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

RUNNING = "running"
PAUSED = "paused"
ROLLED_BACK = "rolled_back"


class RolloutState(BaseModel):
    experiment: str
    stage: int
    status: Literal["running", "paused", "rolled_back"] = RUNNING
    stage_entered_at: float
    clean_since: float  # start of the current run of checks without a breach in this stage
    consecutive_breaches: int = 0
    reasons: list[str] = []
    version: int = 0
    updated_at: float = 0.0
