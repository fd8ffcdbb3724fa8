"""One streamed request against an OpenAI-compatible server, timed from SSE chunks.

TTFT is the arrival of the first chunk that carries generated text, inter-token
latency the gaps between such chunks, end-to-end the arrival of `[DONE]`. Output
tokens come from the `usage` chunk that `stream_options.include_usage` asks for
(vLLM, llama.cpp and OpenAI send it); servers that do not send it get one token
per content chunk, and the record says which count it used.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from typing import Any

import httpx

from quantship.bench.models import RequestRecord, Target
from quantship.bench.prompts import Prompt


def request_body(
    target: Target, prompt: Prompt, *, max_tokens: int, ignore_eos: bool, temperature: float
) -> dict[str, Any]:
    """The JSON body: greedy, fixed length, streamed with usage.

    `ignore_eos` is not OpenAI API but vLLM and llama.cpp's server both accept it,
    and without it output lengths (and so every per-token figure) depend on when
    each model happens to stop.
    """
    body: dict[str, Any] = {
        "model": target.model,
        "max_tokens": max_tokens,
        "temperature": temperature,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if target.api == "chat":
        body["messages"] = prompt.messages()
    else:
        body["prompt"] = prompt.text()
    if ignore_eos:
        body["ignore_eos"] = True
    return body


def _content(chunk: dict[str, Any]) -> str:
    """Generated text carried by one chunk (chat delta or completion text)."""
    text = []
    for choice in chunk.get("choices") or []:
        delta = choice.get("delta")
        if isinstance(delta, dict):
            text.append(delta.get("content") or "")
            text.append(delta.get("reasoning_content") or "")
        else:
            text.append(choice.get("text") or "")
    return "".join(text)


async def send_request(
    client: httpx.AsyncClient,
    target: Target,
    body: dict[str, Any],
    *,
    clock_zero: float,
    level: float,
    phase: str,
    timeout_s: float,
    scheduled_s: float | None = None,
) -> RequestRecord:
    """Send one request; never raises for server or network faults (they become `error`).

    `timeout_s` bounds the whole request, not only the gap between two chunks.
    """
    path = "/chat/completions" if target.api == "chat" else "/completions"
    start = time.perf_counter()
    record = RequestRecord(
        endpoint=target.label, level=level, phase=phase, start_s=start - clock_zero, scheduled_s=scheduled_s
    )
    arrivals: list[float] = []
    usage_tokens: int | None = None
    done = False
    try:
        async with asyncio.timeout(timeout_s), client.stream("POST", target.base_url + path, json=body) as response:
            record.status = response.status_code
            if response.status_code != 200:
                await response.aread()
                record.error = f"http_{response.status_code}"
                return record
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    record.e2e_s = time.perf_counter() - start
                    done = True
                    break
                now = time.perf_counter()
                chunk = json.loads(data)
                if "error" in chunk:
                    record.error = "server_error"
                    return record
                if _content(chunk):
                    arrivals.append(now)
                usage = chunk.get("usage")
                if isinstance(usage, dict) and usage.get("completion_tokens") is not None:
                    usage_tokens = int(usage["completion_tokens"])
                    record.prompt_tokens = usage.get("prompt_tokens")
    except (TimeoutError, httpx.TimeoutException):
        record.error = "timeout"
        return record
    except httpx.ConnectError:
        record.error = "connect"
        return record
    except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError):
        record.error = "stream_cut"
        return record
    except json.JSONDecodeError:
        record.error = "bad_chunk"
        return record
    finally:
        if record.e2e_s is None:
            record.e2e_s = time.perf_counter() - start
    if not done:
        record.error = "stream_cut"
    elif not arrivals:
        record.error = "empty_output"
    record.chunks = len(arrivals)
    if arrivals:
        record.ttft_s = arrivals[0] - start
        record.itl_s = [b - a for a, b in itertools.pairwise(arrivals)]
    if usage_tokens is not None:
        record.output_tokens, record.tokens_from = usage_tokens, "usage"
    else:
        record.output_tokens, record.tokens_from = len(arrivals), "chunks"
    return record
