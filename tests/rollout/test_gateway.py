"""The gateway against real HTTP backends on loopback (OpenAI stubs told how to behave)."""

from __future__ import annotations

import json
import threading

import httpx

from quantship.rollout import gateway as gateway_module
from quantship.rollout.assign import assign
from tests.support.gateway import TOKEN, GatewayServer, chat, make_config

USERS = [f"user-{i}" for i in range(400)]


def _traffic(url: str, users=USERS, **extra) -> list[httpx.Response]:
    return [chat(url, user, **extra) for user in users]


def test_proxies_json_and_sse_with_variant_header_and_model_mapping(tmp_path, control, treatment):
    with GatewayServer(make_config(tmp_path, control.url, treatment.base_url, auto_promote=False)) as gw:
        responses = _traffic(gw.url, USERS[:60])
        variants = {r.headers["x-quantship-variant"] for r in responses}
        assert variants == {"control", "treatment"}
        for r in responses:  # the stub echoes the model it was asked for: the backend's served name
            assert r.json()["model"] == f"{r.headers['x-quantship-variant']}-served"
        with httpx.stream("POST", f"{gw.url}/v1/completions", timeout=10,
                          json={"model": "smol", "prompt": "hello", "stream": True, "user": "u1"}) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            chunks = list(r.iter_raw())
        events = [e for e in b"".join(chunks).split(b"\n\n") if e]
        assert events[-1] == b"data: [DONE]" and len(events) == 24 + 3  # tokens + finish + usage + DONE
        assert len(chunks) > 1  # forwarded as they came, not buffered into one body
        models = httpx.get(f"{gw.url}/v1/models").json()
        assert [m["id"] for m in models["data"]] == ["smol"]
        assert httpx.get(f"{gw.url}/health").json()["status"] == "ok"
        metrics = httpx.get(f"{gw.url}/metrics").text
        assert 'quantship_rollout_requests_total{endpoint="chat",outcome="ok",variant="treatment"}' in metrics
        assert "quantship_rollout_ttft_seconds_bucket" in metrics
        assert "quantship_rollout_treatment_fraction 0.5" in metrics


def test_malformed_requests_get_openai_shaped_4xx(tmp_path, control, treatment):
    config = make_config(tmp_path, control.url, treatment.url, max_request_bytes=2048)
    with GatewayServer(config) as gw:
        url = f"{gw.url}/v1/chat/completions"
        cases = [
            (httpx.post(url, content=b"{not json"), 400),
            (httpx.post(url, json=[1, 2]), 400),
            (httpx.post(url, json={"model": "smol"}), 400),
            (httpx.post(url, json={"model": "smol", "messages": "hi"}), 400),
            (httpx.post(url, json={"model": "gpt-9", "messages": [{"role": "user", "content": "hi"}]}), 404),
            (httpx.post(url, json={"model": "smol", "messages": [{"role": "user", "content": "x" * 5000}]}), 413),
            (httpx.post(f"{gw.url}/v1/completions", json={"model": "smol", "prompt": 3}), 400),
            (httpx.post(url, content=b"\xff\xfe"), 400),
            (httpx.get(f"{gw.url}/v1/nothing"), 404),
            (httpx.get(url), 405),
        ]
        for response, status in cases:
            assert response.status_code == status, response.text
            error = response.json()["error"]
            assert error["message"] and error["type"]
        assert control.requests + treatment.requests == 0  # nothing malformed reached a backend


def test_admin_api_requires_the_bearer_token(tmp_path, control, treatment):
    with GatewayServer(make_config(tmp_path, control.url, treatment.url)) as gw:
        assert httpx.get(f"{gw.url}/admin/status").status_code == 401
        assert httpx.post(f"{gw.url}/admin/rollback", headers={"authorization": "Bearer nope"}).status_code == 401
        assert gw.admin("status")["status"] == "running"


def test_looping_treatment_is_rolled_back_once_with_audit_and_webhook(tmp_path, control, treatment, webhook):
    treatment.set_mode("loop")
    config = make_config(tmp_path, control.url, treatment.url, webhook_url=webhook.url, auto_promote=False)
    with GatewayServer(config) as gw:
        _traffic(gw.url, USERS[:80])
        status = gw.wait_for(lambda s: s["status"] == "rolled_back")
        assert any("repetition" in r for r in status["reasons"])
        after = _traffic(gw.url, USERS[:80])  # every user now on control
        assert {r.headers["x-quantship-variant"] for r in after} == {"control"}
        gw.wait_for(lambda s: True)
        rollbacks = [e for e in gw.admin("audit")["events"] if e["action"] == "rollback"]
        assert len(rollbacks) == 1
        assert rollbacks[0]["consecutive_breaches"] == config.breach_checks
        assert rollbacks[0]["actor"] == "monitor" and rollbacks[0]["from_stage"] == "canary"
    assert [e["event"] for e in webhook.events] == ["rollback"]
    assert any("repetition" in r for r in webhook.events[0]["reasons"])


def test_slower_treatment_is_promoted_not_rolled_back(tmp_path, control, treatment):
    treatment.set_mode("slow", first_token_delay_s=0.02, token_delay_s=0.002)
    with GatewayServer(make_config(tmp_path, control.url, treatment.url)) as gw:
        for _ in range(2):
            _traffic(gw.url, USERS[:60], stream=True)
        status = gw.wait_for(lambda s: s["stage"] >= 2)
        assert status["status"] == "running"
        assert status["last_check"]["treatment"]["latency_p50_s"] > status["last_check"]["control"]["latency_p50_s"]
        assert not [e for e in gw.admin("audit")["events"] if e["action"] == "rollback"]


def test_refusing_treatment_is_rolled_back(tmp_path, control, treatment):
    treatment.set_mode("refuse")
    with GatewayServer(make_config(tmp_path, control.url, treatment.url, auto_promote=False)) as gw:
        _traffic(gw.url, USERS[:80], stream=True)
        status = gw.wait_for(lambda s: s["status"] == "rolled_back")
        assert any(r.startswith("refusal rate") for r in status["reasons"])


def test_promotion_keeps_treatment_users_in_treatment(tmp_path, control, treatment):
    with GatewayServer(make_config(tmp_path, control.url, treatment.url, auto_promote=False)) as gw:
        before = {u: r.headers["x-quantship-variant"] for u, r in zip(USERS[:100], _traffic(gw.url, USERS[:100]), strict=True)}
        assert gw.admin("promote", reason="looks good")["stage_name"] == "75%"
        after = {u: r.headers["x-quantship-variant"] for u, r in zip(USERS[:100], _traffic(gw.url, USERS[:100]), strict=True)}
        assert all(after[u] == "treatment" for u in before if before[u] == "treatment")
        assert sum(v == "treatment" for v in after.values()) > sum(v == "treatment" for v in before.values())


def test_failing_treatment_fails_over_to_control_and_opens_the_circuit(tmp_path, control, treatment):
    treatment.set_mode("error")
    with GatewayServer(make_config(tmp_path, control.url, treatment.url, auto_promote=False, breach_checks=1000)) as gw:
        responses = _traffic(gw.url, USERS[:60])
        assert all(r.status_code == 200 for r in responses)
        assert {r.headers["x-quantship-variant"] for r in responses} == {"control"}
        causes = {r.headers.get("x-quantship-failover") for r in responses}
        assert {"treatment_failed", "circuit_open"} <= causes
        assert treatment.requests == config_failures(gw)  # the breaker stopped sending it traffic
        status = gw.admin("status")
        counters = status["counters"]
        assert status["circuit_open"] and counters["failovers.treatment_failed"] == config_failures(gw)
        assert counters["requests.control"] == 60 and counters["requests.treatment"] == config_failures(gw)
        assert counters["failovers.circuit_open"] > 0


def config_failures(gw: GatewayServer) -> int:
    return gw.gateway.config.breaker.failures


def test_manual_pause_rollback_and_no_promote_after_rollback(tmp_path, control, treatment):
    with GatewayServer(make_config(tmp_path, control.url, treatment.url)) as gw:
        assert gw.admin("pause")["status"] == "paused"
        assert gw.admin("resume")["status"] == "running"
        assert gw.admin("rollback", reason="on-call said so")["status"] == "rolled_back"
        again = httpx.post(f"{gw.url}/admin/promote", headers={"authorization": f"Bearer {TOKEN}"})
        assert again.status_code == 409 and "rolled back" in again.json()["error"]["message"]
        assert gw.admin("rollback")["status"] == "rolled_back"
        actions = [e["action"] for e in gw.admin("audit")["events"]]
        assert actions == ["pause", "resume", "rollback"]  # the second rollback changed nothing


def test_known_answer_probe_regression_rolls_back(tmp_path, control, treatment):
    treatment.behaviour.answers = {}  # the treatment "forgot" its facts; traffic looks normal
    probes = [{"prompt": "What is the capital of France?", "expect": ["Paris"]}]
    config = make_config(tmp_path, control.url, treatment.url, probes=probes, probe_interval_s=0.1, auto_promote=False)
    with GatewayServer(config) as gw:
        status = gw.wait_for(lambda s: s["status"] == "rolled_back")
        assert status["reasons"] == ["known-answer probe failed on treatment only: 'What is the capital of France?'"]
        assert json.dumps(status["probes"]["control"]) == '{"What is the capital of France?": true}'


def test_grafana_dashboard_only_uses_metrics_the_gateway_exports(tmp_path, control, treatment):
    import re
    from pathlib import Path

    dashboard = json.loads((Path(__file__).resolve().parents[2] / "deploy/grafana/quantship-rollout.json").read_text())
    used = {m for p in dashboard["panels"] for t in p["targets"] for m in re.findall(r"quantship_rollout_\w+", t["expr"])}
    with GatewayServer(make_config(tmp_path, control.url, treatment.url)) as gw:
        _traffic(gw.url, USERS[:20], stream=True)
        gw.wait_for(lambda s: s["last_check"] is not None)
        exported = httpx.get(f"{gw.url}/metrics").text
    missing = [m for m in used if not re.search(rf"^{m}[{{ ]", exported, re.MULTILINE)]
    assert not missing and len(used) >= 12


def test_treatment_stalling_before_its_first_token_fails_over_in_streams(tmp_path, control, treatment):
    treatment.set_mode("slow", first_token_delay_s=3.0)
    config = make_config(tmp_path, control.url, treatment.url, auto_promote=False, breaker={"failures": 100, "reset_s": 60},
                         timeouts={"connect_s": 1, "read_s": 0.3, "webhook_s": 1})
    users = [u for u in USERS[:40] if assign(config.experiment, u, 0.5) == "treatment"][:3]
    with GatewayServer(config) as gw:
        for user in users:
            response = chat(gw.url, user, stream=True)
            assert response.status_code == 200 and response.headers["x-quantship-variant"] == "control"
            assert response.headers["x-quantship-failover"] == "treatment_failed"
            assert response.text.endswith("data: [DONE]\n\n") and '"error"' not in response.text
        assert gw.admin("status")["counters"]["failovers.treatment_failed"] == len(users) == 3


def test_client_leaving_mid_stream_is_counted_not_judged(tmp_path, control, treatment):
    for stub in (control, treatment):
        stub.set_mode("slow", first_token_delay_s=0.01, token_delay_s=0.2)
    with GatewayServer(make_config(tmp_path, control.url, treatment.url)) as gw:
        body = {"model": "smol", "messages": [{"role": "user", "content": "hi"}], "user": "leaver", "stream": True}
        with httpx.stream("POST", f"{gw.url}/v1/chat/completions", json=body, timeout=10) as response:
            next(response.iter_raw())
        status = gw.wait_for(lambda s: s["counters"].get("client_disconnects") == 1)
        assert not [k for k in status["counters"] if k.startswith("errors.")]
        assert chat(gw.url, "next-user").status_code == 200


def test_a_slow_quality_observer_does_not_delay_the_clients_last_byte(tmp_path, control, treatment, monkeypatch):
    # The observer (n-gram loops, refusals, lengths) blocks the gateway's event loop until the
    # client has read its whole answer: if the last byte waited for it, the client would time out.
    released = threading.Event()
    real = gateway_module.observe

    def slow_observe(*args, **kwargs):
        assert released.wait(timeout=30), "the client never got its answer while the observer ran"
        return real(*args, **kwargs)

    monkeypatch.setattr(gateway_module, "observe", slow_observe)
    with GatewayServer(make_config(tmp_path, control.url, treatment.url, auto_promote=False)) as gw:
        for stream in (True, False):
            released.clear()
            body = {"model": "smol", "messages": [{"role": "user", "content": "hi"}], "user": "u1", "stream": stream}
            with httpx.stream("POST", f"{gw.url}/v1/chat/completions", json=body, timeout=5) as response:
                answer = b"".join(response.iter_raw())  # to the last byte: [DONE] or the end of the JSON body
            assert answer.endswith(b"data: [DONE]\n\n") if stream else json.loads(answer)["choices"]
            released.set()
        answered = gw.wait_for(lambda s: sum(v for k, v in s["counters"].items() if k.startswith("requests.")) == 2)
        assert sum(v for k, v in answered["counters"].items() if k.startswith("tokens.")) > 0  # observed after, not skipped
