"""The live KL: the control judges sampled answers off the request path (rollout/judge.py).

The stub control in `scorer` mode serves vLLM's /tokenize and `prompt_logprobs` and finds the
words of its own normal output likely; the treatment's `drift` mode says fluent words it
never says, which no heuristic (loops, refusals, length, word-likeness) can tell apart.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import time

import httpx

from quantship.rollout.assign import CONTROL, TREATMENT
from quantship.rollout.config import Backend, LiveKL, Thresholds, Timeouts
from quantship.rollout.judge import Judge, Sample
from quantship.rollout.metrics import Metrics
from quantship.rollout.monitor import BREACH, CROSS_ENTROPY, DISABLED, INSUFFICIENT, PAIRED, PASS, check
from quantship.rollout.quality import Observation
from quantship.rollout.upstream import BackendClient
from tests.support.gateway import GatewayServer, chat, make_config
from tests.support.openai_stub import _OWN, _UNLIKELY

USERS = [f"user-{i}" for i in range(400)]
JUDGE_ALL = {"sample_rate": 1.0, "min_samples": 8}


def _metric(text: str, name: str) -> float:
    return float(re.search(rf"^{name} (\S+)$", text, re.MULTILINE).group(1))


def _window(control_nll: float, treatment_nll: float, scores: int, own_nll: float | None = None) -> list[Observation]:
    """30 answers per variant, and `scores` judged ones each; `own_nll`: the treatment's own, per token (paired)."""
    answers = [Observation(v, float(i), ok=True, tokens=20) for i in range(30) for v in (CONTROL, TREATMENT)]
    own = None if own_nll is None else 10 * own_nll
    judged = [Observation(v, float(i), ok=True, scored_tokens=10, scored_nll=10 * nll,
                          scored_own_nll=own if v == TREATMENT else None)
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
    # Quality not yet judged: the check is not a pass (no promotion), nor a breach.
    assert few.status == INSUFFICIENT and few.live_kl.status == INSUFFICIENT and few.live_kl.value is None
    off = check(_window(1.0, 3.0, 10), th, 10, live_kl_min_samples=None)
    assert off.status == PASS and off.live_kl.status == DISABLED
    assert worse.live_kl.method == CROSS_ENTROPY


def test_paired_scores_judge_log_q_minus_log_p_of_the_same_answers():
    th = Thresholds(max_live_kl=0.25)
    # The control finds treatment answers as unlikely (1.5) as above, but so does the treatment itself:
    # a confident model's own low-entropy answers are not a KL; the unpaired gap (0.5) would breach.
    same = check(_window(1.0, 1.5, 10, own_nll=1.5), th, 10, live_kl_min_samples=10)
    assert same.status == PASS and same.live_kl.method == PAIRED and math.isclose(same.live_kl.value, 0.0)
    worse = check(_window(1.0, 1.5, 10, own_nll=1.1), th, 10, live_kl_min_samples=10)
    assert worse.status == BREACH and worse.live_kl.method == PAIRED and math.isclose(worse.live_kl.value, 0.4)
    assert "mean log q - log p of 10 treatment answers" in worse.reasons[0]
    assert worse.treatment.paired == 10 and worse.control.paired == 0
    few = check(_window(1.0, 3.0, 9, own_nll=0.5), th, 10, live_kl_min_samples=10)
    assert few.live_kl.status == INSUFFICIENT


def test_score_covers_exactly_the_answer_tokens(control):
    control.behaviour.update(scorer=True)
    judge = Judge(LiveKL(), "control-served", "treatment-served", Metrics(), store=None, retry_s=0.1)
    messages = [{"role": "user", "content": "Tell me about the mill."}]

    async def score() -> list[tuple[float, int]]:
        judge.client = BackendClient(Backend(url=control.url, model="control-served"), Timeouts())
        await judge.client.open()
        try:
            chat_answer = await judge.score(Sample(TREATMENT, "chat", messages, None, "The river bends nowhere", 0.0))
            text_answer = await judge.score(Sample(CONTROL, "completions", "Once", None, " The river", 0.0))
        finally:
            await judge.client.close()
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
        live_kl = rollback["check"]["live_kl"]
        assert live_kl["status"] == "breach" and live_kl["method"] == PAIRED
        # -log p minus -log q per word: 4.0 - 0.5, less where a drift word ("and") is one the control says too
        assert 3.0 < live_kl["value"] <= _OWN - _UNLIKELY + 1e-9
        metrics = httpx.get(f"{gw.url}/metrics").text
        assert _metric(metrics, "quantship_rollout_live_kl_enabled") == 1
        assert _metric(metrics, "quantship_rollout_live_kl_paired") == 1
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
        assert status["last_check"]["live_kl"] == {"status": "disabled", "value": None, "method": None}
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


def test_treatment_without_log_probabilities_falls_back_to_the_cross_entropy_gap(tmp_path, control, treatment, caplog):
    control.behaviour.update(scorer=True)
    treatment.behaviour.update(logprobs=False)  # a treatment that ignores `logprobs` (e.g. a hosted API)
    treatment.set_mode("drift")
    config = make_config(tmp_path, control.url, treatment.url, auto_promote=False, live_kl=JUDGE_ALL)
    with caplog.at_level(logging.WARNING, logger="quantship.rollout"), GatewayServer(config) as gw:
        gw.wait_for(lambda s: s["live_kl"] == "enabled")
        [chat(gw.url, user) for user in USERS[:80]]
        status = gw.wait_for(lambda s: s["status"] == "rolled_back")
        rollback = next(e for e in gw.admin("audit")["events"] if e["action"] == "rollback")
        assert rollback["check"]["live_kl"]["method"] == CROSS_ENTROPY
        assert "control cross-entropy of treatment answers" in status["reasons"][0]
        assert _metric(httpx.get(f"{gw.url}/metrics").text, "quantship_rollout_live_kl_paired") == 0
    assert sum("without the treatment's log-probabilities" in r.getMessage() for r in caplog.records) == 1


def test_log_probabilities_the_gateway_asked_for_never_reach_the_client(tmp_path, control, treatment):
    control.behaviour.update(scorer=True)
    config = make_config(tmp_path, control.url, treatment.url, auto_promote=False, live_kl=JUDGE_ALL)
    with GatewayServer(config) as gw:
        gw.wait_for(lambda s: s["live_kl"] == "enabled")
        users = [u for u in USERS if chat(gw.url, u).headers["x-quantship-variant"] == TREATMENT][:6]
        plain = [chat(gw.url, u) for u in users[:3]]
        streamed = [chat(gw.url, u, stream=True) for u in users[3:]]
        asked = chat(gw.url, users[0], logprobs=True)  # a client that wants them gets them
        # The treatment did send them for these very answers: the judge paired every one.
        gw.wait_for(lambda s: s["last_check"] is not None and s["last_check"]["treatment"]["paired"] >= 12)
    assert {r.headers["x-quantship-variant"] for r in (*plain, *streamed, asked)} == {TREATMENT}
    assert all(r.json()["choices"][0]["logprobs"] is None and r.json()["choices"][0]["message"]["content"] for r in plain)
    for response in streamed:
        events = [json.loads(line[5:]) for line in response.text.splitlines()
                  if line.startswith("data:") and line != "data: [DONE]"]
        deltas = [c for e in events for c in e["choices"]]
        assert all(c.get("logprobs") is None for c in deltas)
        assert "".join((c.get("delta") or {}).get("content") or "" for c in deltas)
    assert [t["logprob"] for t in asked.json()["choices"][0]["logprobs"]["content"]][0] == _OWN
