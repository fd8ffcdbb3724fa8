"""Readiness, warm-up and the known-answer probe, over the server's OpenAI API.

A port that accepts connections is not a server that answers: vLLM and llama-server
both listen before the model is loaded (llama-server answers 503 meanwhile), and a
broken checkpoint can load and still emit garbage. So a server is ready only when
`/v1/models` lists the served name, warm-up requests complete, and a greedy
completion of a known prompt contains the known answer.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

PROBE_PROMPT = "The capital of France is"
PROBE_ANSWER = "Paris"
PROBE_MAX_TOKENS = 12  # room for a leading space, an article or a newline before the answer
WARMUP_PROMPTS = ("Hello, my name is", "def fibonacci(n):")


class NotReady(Exception):
    """The server did not become ready; the message says why."""


@dataclass(frozen=True)
class ProbeResult:
    prompt: str
    expected: str
    text: str
    passed: bool


def wait_ready(
    base_url: str,
    model: str,
    alive: Callable[[], bool],
    timeout_s: float,
    poll_s: float = 0.5,
    on_wait: Callable[[float], None] | None = None,
) -> float:
    """Poll `/v1/models` until it lists `model`; returns seconds waited.

    Stops early when `alive()` turns false (the process died: no point waiting).
    """
    started = time.monotonic()
    last = "no answer yet"
    with httpx.Client(timeout=5.0) as client:
        while True:
            waited = time.monotonic() - started
            if not alive():
                raise NotReady(f"the server process exited while loading ({last})")
            try:
                response = client.get(f"{base_url}/v1/models")
                if response.status_code == 200:
                    names = [m.get("id") for m in response.json().get("data", [])]
                    if model in names:
                        return waited
                    last = f"/v1/models lists {names}, not {model!r}"
                else:
                    last = f"/v1/models answered HTTP {response.status_code}"
            except (httpx.HTTPError, ValueError) as error:
                last = f"{type(error).__name__}"
            if waited > timeout_s:
                raise NotReady(f"not ready after {timeout_s:.0f} s ({last})")
            if on_wait:
                on_wait(waited)
            time.sleep(poll_s)


def complete(
    base_url: str, model: str, prompt: str, max_tokens: int, extra: dict | None = None, timeout_s: float = 120.0
) -> str:
    """One greedy `/v1/completions` request; returns the generated text."""
    body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0.0, **(extra or {})}
    response = httpx.post(f"{base_url}/v1/completions", json=body, timeout=timeout_s)
    if response.status_code != 200:
        raise NotReady(f"/v1/completions answered HTTP {response.status_code}: {response.text[:200]}")
    return response.json()["choices"][0]["text"]


def warm_up(base_url: str, model: str, extra: dict | None = None, max_tokens: int = 16) -> int:
    """Send the warm-up prompts (first requests pay for lazy allocation); returns the count."""
    for prompt in WARMUP_PROMPTS:
        complete(base_url, model, prompt, max_tokens, extra)
    return len(WARMUP_PROMPTS)


def probe(
    base_url: str,
    model: str,
    extra: dict | None = None,
    prompt: str = PROBE_PROMPT,
    expected: str = PROBE_ANSWER,
    max_tokens: int = PROBE_MAX_TOKENS,
) -> ProbeResult:
    """Greedy completion of a prompt whose answer the model is known to give."""
    text = complete(base_url, model, prompt, max_tokens, extra)
    return ProbeResult(prompt=prompt, expected=expected, text=text, passed=expected.lower() in text.lower())
