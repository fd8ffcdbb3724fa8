"""What the gateway refuses before routing, and what it must keep forwarding."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantship.rollout.validate import (
    MAX_DEPTH,
    RequestError,
    check_request,
    parse,
    request_schema,
)

CHAT = {"model": "smol", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        (b'{"messages": [], "temperature": NaN}', "NaN"),
        (b'{"messages": [], "temperature": -Infinity}', "Infinity"),
        (b'{"messages": [], "temperature": 1e999}', "too large"),
        (b'{"messages": [{"role": "user", "content": "\\ud800"}]}', "surrogate"),
        (b'{"messages": [{"role": "user", "content": "\\udc00 trailing half"}]}', "surrogate"),
        (b'{"a": ' + b"[" * MAX_DEPTH + b"]" * MAX_DEPTH + b"}", "nested"),
        (b"[" * 100_000 + b"]" * 100_000, "nested"),  # json.loads itself would raise RecursionError
        (b'{"x": 1' + b"0" * 5000 + b"}", "JSON"),  # past Python's int digit limit
        (b"\xed\xa0\x80", "UTF-8"),  # an encoded surrogate is not UTF-8
        (b"[1, 2]", "object"),
    ],
)
def test_bodies_that_cannot_be_re_encoded_are_refused(raw, needle):
    with pytest.raises(RequestError, match=needle):
        parse(raw)


def test_an_escaped_emoji_pair_and_the_deepest_allowed_nesting_pass():
    assert parse(b'{"c": "\\ud83d\\ude00"}')["c"] == "\U0001f600"
    parse(b'{"a": ' + b"[" * (MAX_DEPTH - 1) + b"]" * (MAX_DEPTH - 1) + b"}")


@pytest.mark.parametrize(
    ("endpoint", "change", "param"),
    [
        ("chat", {"max_tokens": "16"}, "max_tokens"),
        ("chat", {"max_tokens": 0}, "max_tokens"),
        ("chat", {"max_tokens": 2**31}, "max_tokens"),
        ("chat", {"max_tokens": True}, "max_tokens"),
        ("chat", {"temperature": 2.5}, "temperature"),
        ("chat", {"temperature": "0.7"}, "temperature"),
        ("chat", {"top_p": -0.1}, "top_p"),
        ("chat", {"n": 1.5}, "n"),
        ("chat", {"stream": "yes"}, "stream"),
        ("chat", {"stream_options": {"include_usage": "yes"}}, "stream_options.include_usage"),
        ("chat", {"stream_options": [1]}, "stream_options"),
        ("chat", {"stop": ["a"] * 17}, "stop"),
        ("chat", {"logit_bias": {"50256": 101}}, "logit_bias.50256"),
        ("chat", {"seed": 2**64}, "seed"),
        ("chat", {"user": 12345}, "user"),
        ("chat", {"model": ["smol"]}, "model"),
        ("chat", {"messages": []}, "messages"),
        ("chat", {"messages": [{"content": "no role"}]}, "messages[0].role"),
        ("chat", {"messages": [{"role": "user", "content": 7}]}, "messages[0].content"),
        ("chat", {"messages": [{"role": "user", "content": [{"text": "no type"}]}]}, "messages[0].content"),
        ("chat", {"tools": [{"type": "function", "function": {}}]}, "tools[0].function.name"),
        ("completions", {"prompt": [1, -2]}, "prompt"),
        ("completions", {"prompt": [[1], []]}, "prompt"),
        ("completions", {"prompt": [2**31]}, "prompt"),
        ("completions", {"logprobs": True}, "logprobs"),
    ],
)
def test_each_forwarded_field_is_checked_and_named(endpoint, change, param):
    body = {**(CHAT if endpoint == "chat" else {"model": "smol", "prompt": "hi"}), **change}
    with pytest.raises(RequestError) as caught:
        check_request(body, endpoint)
    assert caught.value.param == param


def test_the_backends_max_tokens_limit_applies_when_configured():
    check_request({**CHAT, "max_tokens": 4096}, "chat")
    with pytest.raises(RequestError, match="at most 2048") as caught:
        check_request({**CHAT, "max_completion_tokens": 4096}, "chat", max_tokens=2048)
    assert caught.value.param == "max_completion_tokens"


def test_valid_openai_and_backend_specific_requests_still_pass():
    check_request({**CHAT, "temperature": None, "stop": None, "stream": True, "stream_options": {"include_usage": True},
                   "top_k": 40, "min_p": 0.05, "guided_json": {"type": "object"}, "logit_bias": {"11": -100},
                   "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
                   "messages": [{"role": "assistant", "content": None, "tool_calls": [{"id": "1", "type": "function",
                                 "function": {"name": "f", "arguments": "{}"}}]},
                                {"role": "user", "content": [{"type": "text", "text": "hi"}]}]}, "chat")
    for prompt in ("hi", ["a", "b"], [1, 2, 3], [[1, 2], [3]]):
        check_request({"model": "smol", "prompt": prompt, "echo": True, "logprobs": 5}, "completions")


_NUMBERS = st.one_of(st.integers(min_value=1, max_value=2**31 - 1), st.none())


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    text=st.text(st.characters(codec="utf-8"), max_size=40),
    max_tokens=_NUMBERS,
    temperature=st.one_of(st.floats(0, 2), st.none()),
    stop=st.one_of(st.none(), st.text(max_size=5), st.lists(st.text(max_size=5), max_size=16)),
)
def test_any_well_formed_request_passes_and_re_encodes_to_itself(text, max_tokens, temperature, stop):
    body = {**CHAT, "messages": [{"role": "user", "content": text}], "max_tokens": max_tokens, "temperature": temperature,
            "stop": stop}
    for ensure_ascii in (True, False):  # escaped (\\ud83d\\ude00) and raw UTF-8 emoji alike
        parsed = parse(json.dumps(body, ensure_ascii=ensure_ascii).encode())
        check_request(parsed, "chat")
        assert parsed == body


def test_the_published_schema_states_the_enforced_ranges():
    properties = request_schema("chat")["properties"]
    temperature = properties["temperature"]["anyOf"][0]
    assert (temperature["minimum"], temperature["maximum"]) == (0, 2)
    check_request({**CHAT, "temperature": temperature["maximum"]}, "chat")
    with pytest.raises(RequestError):
        check_request({**CHAT, "temperature": temperature["maximum"] + 0.01}, "chat")
    assert request_schema("chat")["required"] == ["messages"]
