"""Issue 14's attacks and failures, replayed: each must end the way docs/rollout.md promises.

- a bad request sent while the breaker waits for its trial request;
- bad-typed fields at backends that answer them with 500 (and input both backends fail);
- a treatment that rejects everything with 400, or with 429;
- the webhook receiver down during a rollback, then up;
- the gateway SIGKILLed right after a rollback, then restarted.
"""

from __future__ import annotations

import signal
import time

import httpx
import yaml

from quantship.rollout.assign import assign
from quantship.rollout.breaker import CLOSED, HALF_OPEN, OPEN
from tests.support.gateway import (
    TOKEN,
    GatewayServer,
    chat,
    make_config,
    start_gateway_process,
)
from tests.support.openai_stub import free_port

POISON = [  # each passed json.loads and crashed the gateway or a backend before issue 14
    b'{"model": "smol", "messages": [{"role": "user", "content": "hi"}], "temperature": NaN, "user": "%s"}',
    b'{"model": "smol", "messages": [{"role": "user", "content": "hi \\ud83d"}], "user": "%s"}',
    b'{"model": "smol", "messages": [{"role": "user", "content": "hi"}], "top_p": 1e999, "user": "%s"}',
    b'{"model": "smol", "messages": [{"role": "user", "content": "hi"}], "max_tokens": "16", "user": "%s"}',
    b'{"model": "smol", "messages": [{"role": "user", "content": "hi"}], "stream_options": "yes", "user": "%s"}',
    b'{"model": "smol", "messages": [{"role": "user", "content": "hi"}], "user": "%s", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}",
]


def _users(variant: str, n: int, fraction: float = 0.5) -> list[str]:
    users = (f"user-{i}" for i in range(100_000))
    return [u for u in users if assign("exp1", u, fraction) == variant][:n]


def _checks(gw: GatewayServer) -> float:
    return sum(gw.gateway.metrics.checks.labels(r)._value.get() for r in ("pass", "breach", "insufficient"))


def _wait_checks(gw: GatewayServer, n: int) -> dict:
    """Let `n` more periodic checks run (enough for `breach_checks` to have rolled back), then return the status."""
    target = _checks(gw) + n
    return gw.wait_for(lambda s: _checks(gw) >= target)


def _openai_error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    return error


def test_bad_requests_and_a_crashing_trial_cannot_hold_the_circuit_open(tmp_path, control, treatment):
    treatment.set_mode("error")
    config = make_config(tmp_path, control.url, treatment.url, auto_promote=False, breach_checks=20,
                         breaker={"failures": 3, "reset_s": 0.3})
    treated = _users("treatment", 600)
    with GatewayServer(config) as gw:
        for user in treated[:3]:
            assert chat(gw.url, user).headers["x-quantship-failover"] == "treatment_failed"
        assert gw.gateway.breaker.state == OPEN
        treatment.set_mode("normal")
        gw.wait_for(lambda s: s["circuit"] == HALF_OPEN)
        before = treatment.requests
        for raw in POISON:
            response = httpx.post(f"{gw.url}/v1/chat/completions", content=raw.replace(b"%s", treated[0].encode()),
                                  headers={"content-type": "application/json"})
            _openai_error(response, 400)
        assert treatment.requests == before and gw.gateway.breaker.state == HALF_OPEN  # the trial is still to come

        send = gw.gateway._send

        async def crash_once(variant, *args):  # the trial meets a bug in the gateway itself
            gw.gateway._send = send
            raise RuntimeError("unexpected")

        gw.gateway._send = crash_once
        _openai_error(chat(gw.url, treated[0]), 500)
        assert gw.gateway.breaker.state == HALF_OPEN  # released, not stuck "in flight"

        later = [chat(gw.url, user) for user in treated]
        assert all(r.status_code == 200 for r in later)
        assert sum(r.headers["x-quantship-variant"] == "treatment" for r in later) == len(treated) == 600
        status = _wait_checks(gw, config.breach_checks + 5)
        assert status["circuit"] == CLOSED and status["status"] == "running"


def test_bad_typed_fields_are_the_clients_400_not_the_treatments_failure(tmp_path, control, treatment):
    # The stub, like the backend in the issue, answers max_tokens "16" with a 500.
    direct = httpx.post(f"{treatment.url}/v1/chat/completions",
                        json={"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": "16"})
    assert direct.status_code == 500
    served = control.requests + treatment.requests
    config = make_config(tmp_path, control.url, treatment.url, auto_promote=False)
    with GatewayServer(config) as gw:
        for i in range(220):
            assert _openai_error(chat(gw.url, f"user-{i}", max_tokens="16"), 400)["param"] == "max_tokens"
        assert control.requests + treatment.requests == served  # none reached a backend
        status = _wait_checks(gw, config.breach_checks + 3)
        assert status["status"] == "running" and status["circuit"] == CLOSED
        assert not [k for k in status["counters"] if k.startswith(("requests.", "errors."))]


def test_input_both_backends_fail_is_the_requests_fault(tmp_path, control, treatment):
    for stub in (control, treatment):  # a backend extension field that both choke on: the gateway cannot know
        stub.behaviour.update(fail_on_field="guided_grammar")
    config = make_config(tmp_path, control.url, treatment.url, auto_promote=False, breach_checks=2,
                         window_min_samples=5)
    users = [f"user-{i}" for i in range(100)]
    treated = [u for u in users if assign("exp1", u, 0.5) == "treatment"]
    with GatewayServer(config) as gw:
        for user in users:
            _openai_error(chat(gw.url, user, guided_grammar="root ::= 'x'"), 502)
        for user in users:  # ordinary traffic on both sides, so the checks have data to judge
            assert chat(gw.url, user).status_code == 200
        status = _wait_checks(gw, config.breach_checks + 3)
        assert status["status"] == "running" and status["circuit"] == CLOSED
        counters = status["counters"]
        assert counters["failovers.both_failed"] == len(treated) and "errors.treatment" not in counters
        assert status["last_check"]["treatment"]["error_rate"] == 0

        control.behaviour.update(fail_on_field=None)  # now only the treatment fails it: that is the treatment's failure
        for user in treated[:3]:
            response = chat(gw.url, user, guided_grammar="root ::= 'x'")
            assert response.status_code == 200 and response.headers["x-quantship-failover"] == "treatment_failed"
        assert gw.gateway.breaker.state == OPEN
        assert gw.admin("status")["counters"]["errors.treatment"] == 3


def test_a_treatment_that_rejects_everything_is_rolled_back(tmp_path, control, treatment):
    treatment.set_mode("reject", reject_status=400)
    with GatewayServer(make_config(tmp_path, control.url, treatment.url, auto_promote=False)) as gw:
        responses = [chat(gw.url, f"user-{i}") for i in range(80)]
        by_variant = {r.headers["x-quantship-variant"]: r.status_code for r in responses}
        assert by_variant == {"treatment": 400, "control": 200}  # passed through as the backend wrote it
        status = gw.wait_for(lambda s: s["status"] == "rolled_back")
        assert any(r.startswith("4xx rate 100.0%") for r in status["reasons"]), status["reasons"]
        assert {chat(gw.url, f"user-{i}").status_code for i in range(20)} == {200}


def test_a_treatment_answering_429_fails_over_and_is_rolled_back(tmp_path, control, treatment):
    treatment.set_mode("reject", reject_status=429)
    with GatewayServer(make_config(tmp_path, control.url, treatment.url, auto_promote=False)) as gw:
        responses = [chat(gw.url, user) for user in _users("treatment", 40)]
        assert {r.status_code for r in responses} == {200}
        assert {r.headers["x-quantship-variant"] for r in responses} == {"control"}
        failures = gw.gateway.config.breaker.failures
        assert [r.headers["x-quantship-failover"] for r in responses[:failures]] == ["treatment_failed"] * failures
        assert gw.admin("status")["counters"]["errors.treatment"] == failures
        status = gw.wait_for(lambda s: s["status"] == "rolled_back")  # the open circuit is a breach at every check
        assert "treatment backend unavailable: circuit breaker open" in status["reasons"]


def test_webhook_receiver_down_during_a_rollback_gets_the_event_once_when_up(tmp_path, control, treatment, webhook):
    webhook.down = True
    config = make_config(tmp_path, control.url, treatment.url, webhook_url=webhook.url, webhook_retry_s=0.05)
    with GatewayServer(config) as gw:
        gw.admin("rollback", reason="on-call saw gibberish")
        deadline = time.monotonic() + 20
        while webhook.attempts < 3:  # retried while down
            assert time.monotonic() < deadline, "webhook never retried"
            time.sleep(0.02)
        webhook.down, webhook.lose_acks = False, 1  # back up, but the answer to the first delivery is lost
        deadline = time.monotonic() + 20
        while len(webhook.events) < 2:
            assert time.monotonic() < deadline, f"not re-sent after a lost answer: {webhook.attempts} attempts"
            time.sleep(0.02)
        assert set(webhook.attempted_ids) == {webhook.events[0]["id"]}  # one event id across every attempt
        [event] = webhook.unique()
        assert event["event"] == "rollback" and event["reasons"] == ["on-call saw gibberish"]
        gw.wait_for(lambda s: True)
        assert [e["action"] for e in gw.admin("audit")["events"]] == ["rollback"]
        assert len(webhook.events) == 2  # taken: never sent again


def test_a_gateway_killed_right_after_a_rollback_delivers_the_webhook_after_its_restart(tmp_path, control, treatment, webhook):
    webhook.down = True  # so nothing can be delivered before the kill
    config = make_config(tmp_path, control.url, treatment.url, webhook_url=webhook.url, webhook_retry_s=0.05, lease_s=0.5)
    config_path = tmp_path / "rollout.yaml"
    config_path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    port, log = free_port(), tmp_path / "gateway.log"
    auth = {"authorization": f"Bearer {TOKEN}"}
    gateway = start_gateway_process(config_path, port, log)
    try:
        rolled = httpx.post(f"http://127.0.0.1:{port}/admin/rollback", json={"reason": "kill me"}, headers=auth, timeout=10)
        assert rolled.json()["status"] == "rolled_back"
    finally:
        gateway.send_signal(signal.SIGKILL)
        gateway.wait(timeout=10)
    assert webhook.events == []
    webhook.down = False
    gateway = start_gateway_process(config_path, port, log)
    try:
        deadline = time.monotonic() + 30
        while not webhook.events:
            assert time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.05)
        time.sleep(0.5)  # room for a wrong second delivery to show up
        [event] = webhook.unique()
        assert len(webhook.events) == 1 and set(webhook.attempted_ids) == {event["id"]}
        assert event["reasons"] == ["kill me"] and event["from_stage"] == "canary"
        audit = httpx.get(f"http://127.0.0.1:{port}/admin/audit", headers=auth, timeout=10).json()["events"]
        assert [e["action"] for e in audit] == ["rollback"]
    finally:
        gateway.send_signal(signal.SIGKILL)
        gateway.wait(timeout=10)
