"""Quality signals of one response, cheap enough to compute on every request.

A quantized model that broke tends to loop on an n-gram, refuse more, stop early
or emit word salad; each function here turns one response into one such signal.
They are pure so the monitor can be tested without a server.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

_WORD = re.compile(r"\S+")
_WORDLIKE = re.compile(r"^[\"'(\[]*[A-Za-z\u00C0-\u024F][A-Za-z\u00C0-\u024F'\-]{0,24}[\"'.,;:!?)\]]*$")
LOOP_NGRAM = 3
LOOP_MIN_NGRAMS = 8
LOOP_REPEATED_SHARE = 0.5


@dataclass(frozen=True)
class Observation:
    """What the monitor keeps about one response (no text, so nothing sensitive is stored)."""

    variant: str
    ts: float
    ok: bool  # False: the backend failed (error, timeout, cut stream) or rejected the request
    rejected: bool = False  # the backend answered 4xx: a request it refused, judged as a rate against the control's
    looping: bool = False
    refusal: bool = False
    tokens: int = 0
    coherence: float = 1.0
    truncated: bool = False  # finish_reason == "length"
    ttft_s: float | None = None
    latency_s: float | None = None
    # A judge score instead of an answer (rollout/judge.py): the control's summed negative
    # log-likelihood of `scored_tokens` answer tokens, and the answering model's own (-log q of the
    # same answer) when it sent its log-probabilities. Scores are not answers and never count as samples.
    scored_tokens: int = 0
    scored_nll: float = 0.0
    scored_own_nll: float | None = None


def is_looping(text: str, n: int = LOOP_NGRAM) -> bool:
    """True when most word n-grams of the output are repeats of earlier ones."""
    words = [w.lower() for w in _WORD.findall(text)]
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    if len(grams) < LOOP_MIN_NGRAMS:
        return False
    return 1 - len(set(grams)) / len(grams) >= LOOP_REPEATED_SHARE


def compile_refusals(patterns: Sequence[str]) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{p})" for p in patterns), re.IGNORECASE)


def is_refusal(text: str, patterns: re.Pattern[str]) -> bool:
    """Refusals open the answer, so only its start is searched."""
    return bool(patterns.search(text[:400]))


def coherence(text: str) -> float:
    """Share of whitespace tokens that look like words: a proxy that drops on token salad."""
    tokens = _WORD.findall(text)
    if not tokens:
        return 0.0
    return sum(1 for t in tokens if _WORDLIKE.match(t)) / len(tokens)


def observe(
    variant: str,
    ts: float,
    text: str,
    completion_tokens: int | None,
    finish_reason: str | None,
    refusals: re.Pattern[str],
    ttft_s: float | None,
    latency_s: float,
) -> Observation:
    tokens = completion_tokens if completion_tokens is not None else len(_WORD.findall(text))
    return Observation(
        variant=variant,
        ts=ts,
        ok=True,
        looping=is_looping(text),
        refusal=is_refusal(text, refusals),
        tokens=tokens,
        coherence=coherence(text),
        truncated=finish_reason == "length",
        ttft_s=ttft_s,
        latency_s=latency_s,
    )
