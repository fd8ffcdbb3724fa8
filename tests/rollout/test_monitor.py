import time

from quantship.rollout.config import DEFAULT_REFUSALS, Thresholds
from quantship.rollout.monitor import BREACH, INSUFFICIENT, PASS, ProbeRound, check
from quantship.rollout.quality import (
    Observation,
    coherence,
    compile_refusals,
    is_looping,
    is_refusal,
    observe,
)

FLUENT = "The river bends past the old mill where farmers once brought grain each autumn and children watch."
REFUSALS = compile_refusals(DEFAULT_REFUSALS)


def test_loop_detection():
    assert is_looping("I think that " * 10)
    assert is_looping("the the the the the the the the the the the the")
    assert not is_looping(FLUENT)
    assert not is_looping("ok ok ok")  # too short to judge


def test_refusal_and_coherence():
    assert is_refusal("I'm sorry, I can't help with that.", REFUSALS)
    assert is_refusal("As an AI, I cannot provide that", REFUSALS)
    assert not is_refusal(FLUENT, REFUSALS)
    assert coherence(FLUENT) == 1.0
    assert coherence("ĠĠ<0x0A> ##@@ 3f9a%% ~~~ ░░") < 0.3


def _window(variant, n, tokens=40, **obs):
    now = time.time()
    return [Observation(variant=variant, ts=now, ok=True, tokens=tokens, **obs) for _ in range(n)]


def test_not_enough_data_is_neither_pass_nor_breach():
    result = check(_window("control", 50) + _window("treatment", 5, looping=True), Thresholds(), min_samples=10)
    assert result.status == INSUFFICIENT and not result.reasons


def test_treatment_is_judged_against_control_in_the_same_window():
    th = Thresholds()
    assert check(_window("control", 30) + _window("treatment", 30), th, 10).status == PASS
    looping = check(_window("control", 30) + _window("treatment", 30, looping=True), th, 10)
    assert looping.status == BREACH and looping.signals == ["repetition"]
    # Both sides refuse equally (a new client asking for forbidden things): not the treatment's fault.
    both = check(_window("control", 30, refusal=True) + _window("treatment", 30, refusal=True), th, 10)
    assert both.status == PASS
    short = check(_window("control", 30, tokens=100) + _window("treatment", 30, tokens=50), th, 10)
    assert short.signals == ["length"]


def test_a_rate_over_its_limit_by_a_small_windows_luck_is_not_a_breach():
    # Measured on the real canary (benchmarks/rollout.py): a Q8_0 treatment looped on 2 of 12
    # answers (16.7% > 15%) against the control's 1 of 17; that is one-sided Fisher p = 0.37.
    th = Thresholds()
    luck = _window("control", 1, looping=True) + _window("control", 16) + _window("treatment", 2, looping=True) + _window("treatment", 10)
    assert check(luck, th, 10).status == PASS
    assert check(luck, Thresholds(significance=1.0), 10).signals == ["repetition"]  # the rate rule alone
    # The same rates on 120 answers a side are no longer luck (p < 0.01).
    real = [o for o in luck for _ in range(10)]
    assert check(real, th, 10).signals == ["repetition"]
    # Refusals on 30 answers a side: 6 vs 0 (20%, over the 10-point margin) is p = 0.012, not yet; 7 vs 0 is p = 0.005.
    assert check(_window("control", 30) + _window("treatment", 6, refusal=True) + _window("treatment", 24), th, 10).status == PASS
    assert check(_window("control", 30) + _window("treatment", 7, refusal=True) + _window("treatment", 23), th, 10).signals == ["refusal"]


def test_slower_treatment_is_not_a_breach_by_default():
    obs = _window("control", 30, latency_s=0.1, ttft_s=0.05) + _window("treatment", 30, latency_s=0.5, ttft_s=0.4)
    assert check(obs, Thresholds(), 10).status == PASS
    assert check(obs, Thresholds(max_latency_ratio=2.0), 10).signals == ["latency"]


def test_errors_open_circuit_and_probe_regressions_are_breaches():
    now = time.time()
    errors = [Observation(variant="treatment", ts=now, ok=False) for _ in range(30)]
    assert check(_window("control", 30) + errors, Thresholds(), 10).signals == ["errors"]
    assert check([], Thresholds(), 10, treatment_circuit_open=True).signals == ["circuit"]
    probes = ProbeRound(ts=now, control={"q1": True, "q2": False}, treatment={"q1": False, "q2": False})
    assert check([], Thresholds(), 10, probes=probes).reasons == ["known-answer probe failed on treatment only: 'q1'"]


def test_observe_prefers_reported_usage():
    obs = observe("control", 0.0, "a b c", 7, "length", REFUSALS, None, 0.2)
    assert obs.tokens == 7 and obs.truncated and obs.ok


def test_treatment_4xx_rate_is_judged_against_the_controls_and_is_not_an_error():
    now = time.time()

    def rejected(variant, n):
        return [Observation(variant=variant, ts=now, ok=False, rejected=True) for _ in range(n)]

    same = check(_window("control", 30) + rejected("control", 10) + _window("treatment", 30) + rejected("treatment", 10),
                 Thresholds(), 10)
    assert same.status == PASS and same.treatment.errors == 0 and same.treatment.rejection_rate == 0.25
    only_treatment = check(_window("control", 30) + rejected("treatment", 30), Thresholds(), 10)
    assert only_treatment.signals == ["rejections"]  # every answer a 4xx: caught, and no quality judged on nothing
