"""The treatment's circuit breaker on an injected clock: open, half-open trial, close or re-open."""

from __future__ import annotations

from quantship.rollout.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _opened(clock: Clock) -> CircuitBreaker:
    breaker = CircuitBreaker(failures=3, reset_s=10, clock=clock)
    for _ in range(3):
        assert breaker.allow()
        breaker.failure()
    assert breaker.state == OPEN and not breaker.allow()
    return breaker


def test_half_open_trial_success_closes_the_circuit():
    clock = Clock()
    breaker = _opened(clock)
    clock.now += 9.9
    assert not breaker.allow() and breaker.state == OPEN
    clock.now += 0.1
    assert breaker.state == HALF_OPEN
    assert breaker.allow()  # the one trial
    assert not breaker.allow()  # nobody else while it is in flight
    breaker.success()
    assert breaker.state == CLOSED and not breaker.is_open
    assert all(breaker.allow() for _ in range(5))


def test_half_open_trial_failure_reopens_for_a_full_reset_period():
    clock = Clock()
    breaker = _opened(clock)
    clock.now += 10
    assert breaker.allow()
    breaker.failure()  # one failure of the trial is enough
    assert breaker.state == OPEN and not breaker.allow()
    clock.now += 9.9
    assert not breaker.allow()
    clock.now += 0.1
    assert breaker.allow()


def test_a_released_trial_passes_the_trial_to_the_next_request():
    clock = Clock()
    breaker = _opened(clock)
    clock.now += 10
    assert breaker.allow()
    breaker.release()  # the trial said nothing about the backend (client error, client gone, crash)
    assert breaker.state == HALF_OPEN and breaker.is_open
    assert breaker.allow()
    breaker.success()
    assert breaker.state == CLOSED


def test_failures_below_the_threshold_do_not_open_and_a_success_resets_the_count():
    breaker = CircuitBreaker(failures=3, reset_s=10, clock=Clock())
    breaker.failure()
    breaker.failure()
    breaker.success()
    breaker.failure()
    breaker.failure()
    assert breaker.state == CLOSED
    breaker.failure()
    assert breaker.state == OPEN
