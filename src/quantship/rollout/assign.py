"""Which variant serves a user: consistent hashing, so assignments are stable.

`bucket(experiment, user)` maps a user to a fixed point in [0, 1); the user is in
the treatment while that point is below the treatment fraction. Raising the
fraction therefore only moves control users into the treatment, never back, and
a new experiment name reshuffles everyone independently of the last one.
"""

from __future__ import annotations

import hashlib

CONTROL = "control"
TREATMENT = "treatment"
VARIANTS = (CONTROL, TREATMENT)


def bucket(experiment: str, user: str) -> float:
    digest = hashlib.sha256(f"{experiment}:{user}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign(experiment: str, user: str, fraction: float) -> str:
    return TREATMENT if bucket(experiment, user) < fraction else CONTROL
