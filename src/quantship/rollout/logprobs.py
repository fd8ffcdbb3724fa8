"""The treatment's own token log-probabilities, asked for on a sampled request and hidden from its client.

For a treatment answer the judge scores, log q (the treatment's) next to log p (the
control's) of the same tokens gives the paired estimate of KL(treatment || control):
exact zero for identical models, and free of the noise of comparing different answers.
Both OpenAI shapes are read: `logprobs.content[].logprob` (chat; llama-server uses it for
completions too) and `logprobs.token_logprobs` (legacy completions, as vLLM answers).

What the gateway added, it takes away: the client gets the answer it would have got,
`"logprobs": null` as the server says when none were asked, so the sampling stays invisible.
"""

from __future__ import annotations

import json
from typing import Any


def ask(body: dict[str, Any], endpoint: str) -> dict[str, Any] | None:
    """The request asking for each generated token's log-probability, or None when the client asked already."""
    if body.get("logprobs") not in (None, False):
        return None
    if endpoint == "chat":
        return {**body, "logprobs": True, "top_logprobs": 1}
    return {**body, "logprobs": 1}


def of_choice(choice: dict[str, Any]) -> tuple[float, int]:
    """Summed log-probability and count of the tokens one choice (or stream delta) carries."""
    logprobs = choice.get("logprobs")
    if not isinstance(logprobs, dict):
        return 0.0, 0
    entries = logprobs.get("content")
    if isinstance(entries, list):
        values = [e.get("logprob") for e in entries if isinstance(e, dict)]
    else:
        values = logprobs.get("token_logprobs") or []
    values = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return sum(values), len(values)


def strip(data: bytes) -> bytes:
    """A JSON answer (or one SSE event's data) with every choice's `logprobs` set to null."""
    try:
        event = json.loads(data)
    except ValueError:
        return data
    if not isinstance(event, dict) or not isinstance(event.get("choices"), list):
        return data
    for choice in event["choices"]:
        if isinstance(choice, dict) and "logprobs" in choice:
            choice["logprobs"] = None
    return json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode()


class StreamStripper:
    """Rewrites an SSE stream line by line; holds back only an unfinished line."""

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, chunk: bytes) -> bytes:
        *lines, self._pending = (self._pending + chunk).split(b"\n")
        return b"".join(self._line(line) + b"\n" for line in lines)

    def flush(self) -> bytes:
        rest, self._pending = self._pending, b""
        return self._line(rest) if rest else b""

    @staticmethod
    def _line(line: bytes) -> bytes:
        if not line.startswith(b"data:") or b'"logprobs"' not in line:
            return line
        data = line[5:].strip()
        return b"data: " + strip(data) if data != b"[DONE]" else line
