"""Circuit breaker for the treatment backend.

After `failures` consecutive failures the treatment gets no traffic for `reset_s`;
then one trial request is let through (half-open): success closes the circuit,
failure opens it again. The trial must end with exactly one of success(), failure()
or release() (an outcome that says nothing about the backend, such as a client
error or a client that left); a trial that is never ended would keep the circuit
open for good. Users keep their assignment; only the serving side moves.
"""

from __future__ import annotations

import time

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"  # reset_s elapsed: the next request (or the one in flight) is the trial


class CircuitBreaker:
    def __init__(self, failures: int, reset_s: float, clock=time.monotonic):
        self.threshold = failures
        self.reset_s = reset_s
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_in_flight = False

    @property
    def state(self) -> str:
        if self._opened_at is None:
            return CLOSED
        if self._trial_in_flight or self._clock() - self._opened_at >= self.reset_s:
            return HALF_OPEN
        return OPEN

    @property
    def is_open(self) -> bool:
        """Open or half-open (the treatment has not proven itself yet): the monitor counts it as a breach."""
        return self._opened_at is not None

    def allow(self) -> bool:
        if self._opened_at is None:
            return True
        if not self._trial_in_flight and self._clock() - self._opened_at >= self.reset_s:
            self._trial_in_flight = True
            return True
        return False

    def success(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._trial_in_flight = False

    def failure(self) -> None:
        self._failures += 1
        if self._trial_in_flight or self._failures >= self.threshold:
            self._opened_at = self._clock()
            self._trial_in_flight = False

    def release(self) -> None:
        """The trial ended without telling anything about the backend: the next request is the trial."""
        self._trial_in_flight = False
