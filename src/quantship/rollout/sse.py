"""Reads an OpenAI completion (SSE stream or JSON body) for the quality monitor.

The gateway forwards stream bytes untouched as they arrive; this reader only
watches a copy, so the client sees each token when the backend sends it.
"""

from __future__ import annotations

import json
from typing import Any

from quantship.rollout import logprobs


def _choice_text(choice: dict[str, Any]) -> str:
    if "delta" in choice:
        return (choice.get("delta") or {}).get("content") or ""
    if "message" in choice:
        return (choice.get("message") or {}).get("content") or ""
    return choice.get("text") or ""


def _loads_or_none(data: bytes) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        return None


class CompletionReader:
    """Accumulates text, finish reason and usage from chunks (streamed) or a whole body."""

    def __init__(self) -> None:
        self.text_parts: list[str] = []
        self.finish_reason: str | None = None
        self.completion_tokens: int | None = None
        self.prompt_tokens: int | None = None
        self.content_events = 0
        self.error: str | None = None
        self.own_logprob = 0.0  # summed log-probability of the answer's tokens, when the backend sent them
        self.own_logprob_tokens = 0
        self._buffer = b""

    @property
    def text(self) -> str:
        return "".join(self.text_parts)

    def feed(self, chunk: bytes) -> bool:
        """Feed raw stream bytes; True when this chunk carried the first generated text."""
        had_content = self.content_events > 0
        self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        events = [line[5:].strip() for line in lines if line.startswith(b"data:")]
        events = [data for data in events if data and data != b"[DONE]"]
        if events:
            try:  # one parse for every event of the chunk: the per-call overhead of json.loads is most of its cost
                parsed = json.loads(b"[" + b",".join(events) + b"]")
            except ValueError:  # one malformed event: parse each, skip what does not parse
                parsed = [event for event in map(_loads_or_none, events) if event is not None]
            for event in parsed:
                try:
                    self._event(event)
                except (TypeError, AttributeError):
                    continue
        return not had_content and self.content_events > 0

    def feed_body(self, body: bytes) -> None:
        try:
            self._event(json.loads(body))
        except (ValueError, TypeError, AttributeError):
            self.error = "backend returned a body that is not OpenAI JSON"

    def _event(self, event: dict[str, Any]) -> None:
        if "error" in event:
            self.error = str(event["error"])
        for choice in event.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue
            piece = _choice_text(choice)
            if piece:
                self.text_parts.append(piece)
                self.content_events += 1
            if choice.get("logprobs"):
                total, count = logprobs.of_choice(choice)
                self.own_logprob += total
                self.own_logprob_tokens += count
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        usage = event.get("usage")
        if isinstance(usage, dict):
            self.completion_tokens = usage.get("completion_tokens", self.completion_tokens)
            self.prompt_tokens = usage.get("prompt_tokens", self.prompt_tokens)

    def tokens(self) -> int:
        """Usage when the backend reported it, else one token per streamed content event."""
        if self.completion_tokens is not None:
            return self.completion_tokens
        return self.content_events if self.content_events > 1 else len(self.text.split())
