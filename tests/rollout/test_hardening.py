"""What no client can do through the gateway: read another user's session, crash a request, confuse the counters."""

from __future__ import annotations

import http.client
import json
import logging

import httpx

from quantship.rollout.assign import assign
from tests.support.gateway import TOKEN, GatewayServer, chat, make_config

MESSAGES = [{"role": "user", "content": "hi"}]


def _users(variant: str, n: int, fraction: float = 0.5) -> list[str]:
    users = (f"user-{i}" for i in range(10_000))
    return [u for u in users if assign("exp1", u, fraction) == variant][:n]


def test_backend_cookies_and_client_credentials_never_reach_a_backend(tmp_path, control, treatment, monkeypatch):
    monkeypatch.setenv("TREATMENT_KEY", "backend-secret")
    for stub in (control, treatment):
        stub.behaviour.update(set_cookie="session=alice-only; Path=/")
    config = make_config(tmp_path, control.url, treatment.url, auto_promote=False)
    config.treatment.api_key_env = "TREATMENT_KEY"
    client_secrets = {"authorization": "Bearer client-token", "cookie": "sid=client", "x-api-key": "client-key",
                      "proxy-authorization": "Basic Y2xpZW50", "openai-organization": "org-client"}
    direct = httpx.post(f"{control.url}/v1/chat/completions", json={"model": "m", "messages": MESSAGES})
    assert "alice-only" in direct.headers["set-cookie"]  # the backends do hand out a session cookie
    control.headers_seen.clear()
    with GatewayServer(config) as gw:
        first = chat(gw.url, "alice")
        assert "set-cookie" not in first.headers  # nor does one user's backend session reach the client side
        for i in range(20):
            body = {"model": "smol", "messages": MESSAGES, "user": f"user-{i}"}
            assert httpx.post(f"{gw.url}/v1/chat/completions", json=body, headers=client_secrets).status_code == 200
    seen = control.headers_seen + treatment.headers_seen
    assert len(seen) == 21
    assert not [h for h in seen if "cookie" in h], "a backend's Set-Cookie was replayed"
    for headers in seen:
        assert not set(client_secrets) - {"authorization"} & set(headers)
    assert {h.get("authorization") for h in treatment.headers_seen} == {"Bearer backend-secret"}
    assert {h.get("authorization") for h in control.headers_seen} == {None}


def test_an_unexpected_error_is_one_openai_500_on_a_connection_that_stays_open(tmp_path, control, treatment, caplog):
    gateway_config = make_config(tmp_path, control.url, treatment.url)
    with GatewayServer(gateway_config) as gw:
        real = gw.gateway._route
        crashes = {"left": 2}

        def route(request, body):
            if crashes["left"]:
                crashes["left"] -= 1
                raise RuntimeError("a bug in the gateway")
            return real(request, body)

        gw.gateway._route = route
        connection = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
        body = json.dumps({"model": "smol", "messages": MESSAGES, "user": "u1"})
        statuses = []
        with caplog.at_level(logging.ERROR, logger="quantship.rollout"):
            for _ in range(3):
                connection.request("POST", "/v1/chat/completions", body, {"content-type": "application/json"})
                response = connection.getresponse()  # raises RemoteDisconnected if the server had closed it
                payload = json.loads(response.read())
                statuses.append(response.status)
                if response.status == 500:
                    assert payload["error"]["type"] == "server_error" and set(payload["error"]) == {"message", "type", "param", "code"}
                assert response.getheader("connection") != "close"
        connection.close()
    assert statuses == [500, 500, 200]
    tracebacks = [r for r in caplog.records if r.name == "quantship.rollout" and r.exc_info]
    assert len(tracebacks) == 1  # the second crash within a minute is counted, not logged again
    assert gw.gateway.crash_log.suppressed == 1


def test_admin_audit_limit_is_validated(tmp_path, control, treatment):
    with GatewayServer(make_config(tmp_path, control.url, treatment.url)) as gw:
        gw.admin("pause")
        auth = {"authorization": f"Bearer {TOKEN}"}
        for bad in ("²", "٣", "99999999999999999999", "-1", "1.5", "", "10001"):
            response = httpx.get(f"{gw.url}/admin/audit", params={"limit": bad}, headers=auth)
            assert response.status_code == 400, bad
            assert response.json()["error"]["param"] == "limit"
        assert httpx.get(f"{gw.url}/admin/audit?limit=0", headers=auth).json()["events"] == []
        assert [e["action"] for e in httpx.get(f"{gw.url}/admin/audit?limit=1", headers=auth).json()["events"]] == ["pause"]


def test_admin_api_answers_403_when_its_token_variable_is_unset(tmp_path, control, treatment, monkeypatch):
    monkeypatch.delenv("QUANTSHIP_ROLLOUT_TOKEN")
    with GatewayServer(make_config(tmp_path, control.url, treatment.url)) as gw:
        for method, path in (("GET", "/admin/status"), ("GET", "/admin/audit"), ("POST", "/admin/rollback")):
            for headers in ({}, {"authorization": "Bearer x"}, {"authorization": f"Bearer {TOKEN}"}):
                response = httpx.request(method, f"{gw.url}{path}", headers=headers)
                assert response.status_code == 403, (path, headers)
                assert response.json()["error"]["type"] == "permission_error"
                assert "QUANTSHIP_ROLLOUT_TOKEN" in response.json()["error"]["message"]
        assert gw.gateway.controller.state.status == "running"


def _unkeyed_metric(url: str) -> float:
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith("quantship_rollout_unkeyed_requests_total "):
            return float(line.split()[1])
    raise AssertionError("unkeyed metric missing")


def test_stored_unkeyed_counter_and_prometheus_agree(tmp_path, control, treatment):
    with GatewayServer(make_config(tmp_path, control.url, treatment.url)) as gw:
        url = f"{gw.url}/v1/chat/completions"
        for user in ("", None):
            assert httpx.post(url, json={"model": "smol", "messages": MESSAGES, "user": user}).status_code == 200
        assert httpx.post(url, json={"model": "smol", "messages": MESSAGES}, headers={"x-user-id": "bob"}).status_code == 200
        for user in (0, 123, ["a"], {"id": "a"}, True):  # not a string: refused, counted nowhere
            assert httpx.post(url, json={"model": "smol", "messages": MESSAGES, "user": user}).status_code == 400
        stored = gw.admin("status")["counters"].get("unkeyed", 0)
        assert stored == _unkeyed_metric(gw.url) == 2


def test_circuit_gauge_and_status_follow_the_breaker_also_after_a_rollback(tmp_path, control, treatment):
    treatment.set_mode("error")
    config = make_config(tmp_path, control.url, treatment.url, auto_promote=False, breach_checks=1000,
                         breaker={"failures": 2, "reset_s": 0.5})
    with GatewayServer(config) as gw:
        assert 'quantship_rollout_circuit_open 0.0' in httpx.get(f"{gw.url}/metrics").text
        for user in _users("treatment", 3):
            chat(gw.url, user)
        status = gw.admin("status")
        assert status["circuit"] == "open" and status["circuit_open"]
        assert "quantship_rollout_circuit_open 1.0" in httpx.get(f"{gw.url}/metrics").text
        gw.admin("rollback", reason="treatment down")
        # No traffic reaches the treatment any more; its circuit still moves on to half-open, not "open forever".
        status = gw.wait_for(lambda s: s["circuit"] == "half_open", timeout_s=10)
        assert not status["circuit_open"] and status["status"] == "rolled_back"
        assert "quantship_rollout_circuit_open 0.0" in httpx.get(f"{gw.url}/metrics").text


def test_openapi_description_matches_what_the_gateway_enforces(tmp_path, control, treatment):
    with GatewayServer(make_config(tmp_path, control.url, treatment.url)) as gw:
        spec = httpx.get(f"{gw.url}/openapi.json").json()
        assert spec["openapi"].startswith("3.1")
        assert {"/v1/chat/completions", "/v1/completions", "/v1/models", "/health", "/metrics",
                "/rollout/analysis"} <= set(spec["paths"])
        schema = spec["paths"]["/v1/chat/completions"]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert schema["properties"]["model"] == {"enum": ["smol"]}
        top_p = schema["properties"]["top_p"]["anyOf"][0]
        url = f"{gw.url}/v1/chat/completions"
        at_limit = httpx.post(url, json={"model": "smol", "messages": MESSAGES, "top_p": top_p["maximum"]})
        past_limit = httpx.post(url, json={"model": "smol", "messages": MESSAGES, "top_p": top_p["maximum"] + 0.5})
        assert at_limit.status_code == 200 and past_limit.status_code == 400
        assert past_limit.json()["error"]["param"] == "top_p"
