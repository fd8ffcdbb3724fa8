"""Property-based fuzzing of the gateway's public endpoints over one keep-alive connection.

Thousands of generated requests (random JSON in every forwarded field, NaN/Infinity
literals, lone surrogates escaped and raw, deep nesting, raw bytes, random paths and
methods): none may get a 500, none may lose the connection, every error is
OpenAI-shaped, and none may move the breaker or the rollout.
"""

from __future__ import annotations

import http.client
import json
from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quantship.rollout.breaker import CLOSED
from quantship.rollout.validate import CHAT, COMPLETIONS, MAX_DEPTH
from tests.support.gateway import GatewayServer, make_config

EXAMPLES = 3000
FIELDS = sorted(set(CHAT.fields) | set(COMPLETIONS.fields))
LONE_SURROGATES = st.sampled_from(["\ud800", "x\udfff", "\ud83d"])
SCALARS = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=12) | LONE_SURROGATES
NESTED = st.lists(SCALARS, max_size=3) | st.dictionaries(st.text(max_size=4), SCALARS, max_size=2)
JSON = SCALARS | NESTED | st.lists(NESTED, max_size=2)  # deeper nesting is drawn separately, around the limit
VALID = {
    "chat": {"model": "smol", "messages": [{"role": "user", "content": "hi"}]},
    "completions": {"model": "smol", "prompt": "hi"},
}


def _encode(body: dict, ascii_only: bool) -> bytes:
    # allow_nan writes NaN/Infinity literals; surrogatepass lets raw lone surrogates through as invalid UTF-8
    return json.dumps(body, allow_nan=True, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


@st.composite
def completion_requests(draw) -> tuple[str, str, bytes]:
    endpoint = draw(st.sampled_from(["chat", "completions"]))
    base = dict(VALID[endpoint]) if draw(st.booleans()) else {}
    fields = draw(st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=4), JSON, max_size=4))
    body = {**base, **fields}
    twist = draw(st.sampled_from(["none"] * 8 + ["nested", "truncated"]))
    if twist == "nested":  # around the depth limit
        depth = draw(st.integers(MAX_DEPTH - 2, MAX_DEPTH + 2))
        body["extra"] = json.loads("[" * depth + "]" * depth)
    raw = _encode(body, draw(st.booleans()))
    if twist == "truncated":
        raw = raw[: draw(st.integers(0, max(len(raw) - 1, 0)))]
    return "POST", f"/v1/{'chat/completions' if endpoint == 'chat' else 'completions'}", raw


OTHER = st.tuples(
    st.sampled_from(["GET", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"]),
    st.sampled_from(["/v1/models", "/health", "/metrics", "/openapi.json", "/v1/chat/completions", "/v1/completions",
                     "/v1/embeddings", "/", "/v1/../admin/status", "/%00", "/v1/models?x=%ff",
                     "/rollout/analysis", "/rollout/analysis?gate=pass", "/rollout/analysis?gate=%ff"]),
    st.binary(max_size=64),
)
REQUESTS = st.one_of(completion_requests(), completion_requests(), completion_requests(), OTHER)
USER_HEADER = st.one_of(st.none(), st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=12))


def _assert_openai_error(status: int, payload: bytes) -> None:
    error = json.loads(payload)["error"]
    assert set(error) == {"message", "type", "param", "code"} and isinstance(error["message"], str), (status, payload)


def test_generated_requests_never_crash_drop_or_move_the_rollout(tmp_path, control, treatment):
    config = make_config(tmp_path, control.url, treatment.url, auto_promote=False)
    statuses: Counter[int] = Counter()
    with GatewayServer(config) as gw:
        before = gw.admin("status")
        connection = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=30)
        connection.connect()
        sock = connection.sock

        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(request=REQUESTS, user=USER_HEADER)
        def one(request: tuple[str, str, bytes], user: str | None) -> None:
            method, path, raw = request
            headers = {"content-type": "application/json"}
            if user:
                headers["x-user-id"] = user
            connection.request(method, path, raw, headers)
            response = connection.getresponse()  # a dropped connection raises here
            payload = response.read()
            statuses[response.status] += 1
            assert connection.sock is sock, "the gateway closed the connection"
            assert response.status != 500 and response.status < 600, payload
            if response.status == 412 and path.startswith("/rollout/analysis"):
                assert json.loads(payload)["verdict"] in ("fail", "inconclusive")  # ?gate= did not hold
            elif response.status >= 400:
                _assert_openai_error(response.status, payload)

        one()
        connection.close()
        after = gw.admin("status")
    assert sum(statuses.values()) >= EXAMPLES
    print(f"fuzz: {sum(statuses.values())} requests, statuses {dict(sorted(statuses.items()))}")
    for key in ("stage", "status", "consecutive_breaches", "reasons", "treatment_fraction"):
        assert after[key] == before[key], key
    assert after["circuit"] == CLOSED and gw.gateway.breaker.state == CLOSED
    counters = after["counters"]
    assert "errors.treatment" not in counters  # nothing a client sent counted against the treatment
    assert counters.get("failovers.treatment_failed", 0) == counters.get("failovers.both_failed", 0)
