"""One streamed request against the real loopback stub: timings, tokens, errors."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from quantship.bench.client import request_body, send_request
from quantship.bench.prompts import Prompt
from tests.support.bench_settings import target_for
from tests.support.openai_stub import OpenAIStub

PROMPT = Prompt(prompt="Tell me about rivers.")


def send(stub, api="chat", max_tokens=8, body_changes=None, timeout_s=30.0):
    target = target_for(stub, api=api)
    body = request_body(target, PROMPT, max_tokens=max_tokens, ignore_eos=True, temperature=0.0)
    body.update(body_changes or {})

    async def go():
        async with httpx.AsyncClient() as client:
            return await send_request(
                client, target, body, clock_zero=time.perf_counter(), level=1, phase="measure", timeout_s=timeout_s
            )

    return asyncio.run(go())


def test_body_is_greedy_fixed_length_streamed_with_usage(stub):
    body = request_body(target_for(stub), PROMPT, max_tokens=7, ignore_eos=True, temperature=0.0)
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert (body["max_tokens"], body["temperature"], body["ignore_eos"]) == (7, 0.0, True)
    assert body["messages"] == [{"role": "user", "content": "Tell me about rivers."}]
    completion = request_body(
        target_for(stub, api="completions"), PROMPT, max_tokens=7, ignore_eos=False, temperature=0.0
    )
    assert completion["prompt"] == "Tell me about rivers." and "ignore_eos" not in completion


@pytest.mark.parametrize("api", ["chat", "completions"])
def test_ttft_and_inter_token_gaps_bracket_the_server_delays(api):
    first, gap, tokens = 0.3, 0.05, 12
    with OpenAIStub(mode="slow", first_token_delay_s=first, token_delay_s=gap, tokens=tokens) as stub:
        r = send(stub, api=api, max_tokens=tokens)
    assert r.ok and r.status == 200
    # The first token cannot arrive before the server's delay, nor after the stream could have ended.
    assert first <= r.ttft_s < first + (tokens - 1) * gap
    assert len(r.itl_s) == tokens - 1
    # Chunks may coalesce in socket buffers, so bound the sum of the gaps, not each gap.
    assert sum(r.itl_s) >= (tokens - 1) * gap * 0.95
    assert r.e2e_s >= first + (tokens - 1) * gap * 0.95 and r.e2e_s > r.ttft_s
    assert (r.output_tokens, r.tokens_from, r.chunks) == (tokens, "usage", tokens)
    assert r.tpot_s == pytest.approx((r.e2e_s - r.ttft_s) / (tokens - 1))


def test_tokens_counted_from_chunks_when_the_server_sends_no_usage():
    with OpenAIStub(mode="normal", tokens=6, always_usage=False) as stub:
        r = send(stub, max_tokens=6, body_changes={"stream_options": {"include_usage": False}})
    assert r.ok and (r.output_tokens, r.tokens_from) == (6, "chunks")


def test_http_error_is_recorded_not_raised():
    with OpenAIStub(mode="error") as stub:
        r = send(stub)
    assert (r.ok, r.error, r.status) == (False, "http_500", 500)


def test_server_dying_mid_stream_is_a_cut_stream():
    with OpenAIStub(mode="slow", first_token_delay_s=0.05, token_delay_s=0.2, tokens=50) as stub:

        async def go():
            target = target_for(stub)
            body = request_body(target, PROMPT, max_tokens=50, ignore_eos=True, temperature=0.0)
            async with httpx.AsyncClient() as client:
                task = asyncio.create_task(
                    send_request(client, target, body, clock_zero=0.0, level=1, phase="measure", timeout_s=30)
                )
                await asyncio.sleep(0.5)
                stub.set_mode("die")
                return await task

        r = asyncio.run(go())
    assert (r.ok, r.error, r.status) == (False, "stream_cut", 200)


def test_refused_connection_and_total_timeout():
    with OpenAIStub() as stub:
        url = stub.base_url
    dead = target_for(stub).model_copy(update={"base_url": url})

    async def go(target, timeout_s):
        async with httpx.AsyncClient() as client:
            body = request_body(target, PROMPT, max_tokens=100, ignore_eos=True, temperature=0.0)
            return await send_request(
                client, target, body, clock_zero=0.0, level=1, phase="measure", timeout_s=timeout_s
            )

    assert asyncio.run(go(dead, 5)).error == "connect"
    # Chunks keep coming every 0.1 s, so only a limit on the whole request can stop it.
    with OpenAIStub(mode="slow", first_token_delay_s=0.1, token_delay_s=0.1, tokens=100) as slow:
        assert asyncio.run(go(target_for(slow), 0.5)).error == "timeout"
