"""The live KL: the control judges sampled answers off the request path (rollout/judge.py).

The stub control in `scorer` mode serves vLLM's /tokenize and `prompt_logprobs` and finds the
words of its own normal output likely; the treatment's `drift` mode says fluent words it
never says, which no heuristic (loops, refusals, length, word-likeness) can tell apart.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time

import httpx

from quantship.rollout.assign import CONTROL, TREATMENT
from quantship.rollout.config import LiveKL, Thresholds
from quantship.rollout.judge import Judge, Sample
from quantship.rollout.metrics import Metrics
from quantship.rollout.monitor import BREACH, DISABLED, INSUFFICIENT, PASS, check
from quantship.rollout.quality import Observation
from tests.rollout.helpers import GatewayServer, chat, make_config

USERS = [f"user-{i}" for i in range(400)]
JUDGE_ALL = {"sample_rate": 1.0, "min_samples": 8}


def _metric(text: str, name: str) -> float:
    return float(re.search(rf"^{name} (\S+)$", text, re.MULTILINE).group(1))


def _window(control_nll: float, treatment_nll: float, scores: int) -> list[Observation]:
    answers = [Observation(v, float(i), ok=True, tokens=20) for i in range(30) for v in (CONTROL, TREATMENT)]
    judged = [Observation(v, float(i), ok=True, scored_tokens=10, scored_nll=10 * nll)
              for i in range(scores) for v, nll in ((CONTROL, control_nll), (TREATMENT, treatment_nll))]
    return answers + judged


def test_check_judges_the_cross_entropy_gap_only_with_enough_scores():
    th = Thresholds(max_live_kl=0.25)
    worse = check(_window(1.0, 1.5, 10), th, 10, live_kl_min_samples=10)
    assert worse.status == BREACH and worse.signals == ["live_kl"]
    assert math.isclose(worse.live_kl.value, 0.5) and "live KL 0.500" in worse.reasons[0]
    assert worse.treatment.samples == 30  # scores are not answers
    close = check(_window(1.0, 1.1, 10), th, 10, live_kl_min_samples=10)
    assert close.status == PASS and close.live_kl.status == PASS
    few = check(_window(1.0, 3.0, 9), th, 10, live_kl_min_samples=10)
    assert few.status == PASS and few.live_kl.status == INSUFFICIENT and few.live_kl.value is None
    off = check(_window(1.0, 3.0, 10), th, 10, live_kl_min_samples=None)
    assert off.status == PASS and off.live_kl.status == DISABLED


def test_score_covers_exactly_the_answer_tokens(control):
    control.behaviour.update(scorer=True)
    judge = Judge(LiveKL(), "control-served", Metrics(), store=None, retry_s=0.1)
    messages = [{"role": "user", "content": "Tell me about the mill."}]

    async def score() -> list[tuple[float, int]]:
        async with httpx.AsyncClient(base_url=control.url) as client:
            judge.client = client
            chat_answer = await judge.score(Sample(TREATMENT, "chat", messages, None, "The river bends nowhere", 0.0))
            text_answer = await judge.score(Sample(CONTROL, "completions", "Once", None, " The river", 0.0))
            return [chat_answer, text_answer]

    (chat_nll, chat_tokens), (text_nll, text_tokens) = asyncio.run(score())
    assert (chat_tokens, text_tokens) == (4, 2)
    assert math.isclose(chat_nll, 0.5 * 3 + 4.0) and math.isclose(text_nll, 1.0)


def test_fluent_but_unlikely_treatment_is_rolled_back_by_the_live_kl(tmp_path, control, treatment):
    control.behaviour.update(scorer=True)
    treatment.set_mode("drift")
    config = make_config(tmp_path, control.url, treatment.url, auto_promote=False, live_kl=JUDGE_ALL)
    with GatewayServer(config) as gw:
        responses = [chat(gw.url, user) for user in USERS[:80]]
        assert {r.status_code for r in responses} == {200}
        status = gw.wait_for(lambda s: s["status"] == "rolled_back")
        assert status["live_kl"] == "enabled"
        assert status["reasons"] and all(r.startswith("live KL ") for r in status["reasons"])  # no heuristic fired
        rollback = next(e for e in gw.admin("audit")["events"] if e["action"] == "rollback")
        assert rollback["check"]["live_kl"]["status"] == "breach" and rollback["check"]["live_kl"]["value"] > 3
        metrics = httpx.get(f"{gw.url}/metrics").text
        assert _metric(metrics, "quantship_rollout_live_kl_enabled") == 1
        assert _metric(metrics, "quantship_rollout_live_kl") > config.thresholds.max_live_kl
        assert _metric(metrics, 'quantship_rollout_quality{signal="control_nll",variant="treatment"}') > 3


def test_treatment_the_control_agrees_with_is_promoted(tmp_path, control, treatment):
    control.behaviour.update(scorer=True)
    with GatewayServer(make_config(tmp_path, control.url, treatment.url, live_kl=JUDGE_ALL)) as gw:
        for _ in range(2):
            [chat(gw.url, user, stream=True) for user in USERS[:60]]
        status = gw.wait_for(lambda s: s["stage"] >= 2 and s["last_check"]["live_kl"]["status"] == "pass")
        assert status["status"] == "running" and abs(status["last_check"]["live_kl"]["value"]) < 0.01
        analysis = httpx.get(f"{gw.url}/rollout/analysis").json()
        assert analysis["live_kl"]["status"] == "pass"


def test_control_that_cannot_score_disables_the_live_kl_with_one_warning(tmp_path, control, treatment, caplog):
    treatment.set_mode("drift")  # the stub control without `scorer`: no /tokenize, no prompt_logprobs
    config = make_config(tmp_path, control.url, treatment.url, auto_promote=False, live_kl=JUDGE_ALL)
    with caplog.at_level(logging.WARNING, logger="quantship.rollout"), GatewayServer(config) as gw:
        [chat(gw.url, user) for user in USERS[:80]]
        status = gw.wait_for(lambda s: s["last_check"] is not None and s["last_check"]["status"] == "pass")
        assert status["status"] == "running" and status["live_kl"] == "disabled"
        assert status["last_check"]["live_kl"] == {"status": "disabled", "value": None}
        metrics = httpx.get(f"{gw.url}/metrics").text
        assert _metric(metrics, "quantship_rollout_live_kl_enabled") == 0
        assert math.isnan(_metric(metrics, "quantship_rollout_live_kl"))
        assert httpx.get(f"{gw.url}/rollout/analysis").json()["live_kl"]["status"] == "disabled"
    warnings = [r for r in caplog.records if "live KL disabled" in r.getMessage()]
    assert len(warnings) == 1


def test_slow_or_failing_judge_never_delays_or_fails_a_client(tmp_path, control, treatment):
    control.behaviour.update(scorer=True)
    config = make_config(tmp_path, control.url, treatment.url, auto_promote=False,
                         live_kl={**JUDGE_ALL, "queue_size": 2})
    with GatewayServer(config) as gw:
        gw.wait_for(lambda s: s["live_kl"] == "enabled")
        control.behaviour.update(score_delay_s=2.0)  # each score now takes 4 s
        started = time.perf_counter()
        responses = [chat(gw.url, user) for user in USERS[:40]]
        elapsed = time.perf_counter() - started
        assert {r.status_code for r in responses} == {200} and elapsed < 4.0
        control.behaviour.update(score_delay_s=0.0, fail_on_field="prompt_logprobs")  # the judge's calls now 500
        responses = [chat(gw.url, user) for user in USERS[40:80]]
        assert {r.status_code for r in responses} == {200}
        deadline = time.monotonic() + 60  # the queued slow scores drain first (4 s each), then the 500s count
        while (failed := _count(gw.url, "failed")) < 1 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _count(gw.url, "dropped") >= 30 and failed >= 1


def _count(url: str, result: str) -> float:
    metrics = httpx.get(f"{url}/metrics").text
    return sum(_metric(metrics, f'quantship_rollout_live_kl_samples_total{{result="{result}",variant="{v}"}}')
               for v in (CONTROL, TREATMENT))
