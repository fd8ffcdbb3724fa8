"""Sliding-window perplexity with the top-k next-token distribution kept per position.

The windows are planned once (from the baseline) and stored, so every variant is
scored on exactly the same tokens with exactly the same context. Each window scores
only the targets no earlier window scored, so with stride < length every target gets
at least `length - stride` tokens of context (the standard strided evaluation).
The model is any `logits_fn(input_ids [B, L]) -> logits [B, L, V]`, so transformers
and llama.cpp models are scored by the same code.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

from quantship.errors import InputError

LogitsFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class WindowPlan:
    input_ids: torch.Tensor  # int64 [W, L]
    first_target: torch.Tensor  # int64 [W]: first position scored in each window

    @property
    def scored_positions(self) -> int:
        return int((self.input_ids.shape[1] - self.first_target).sum())


@dataclass
class PerplexityResult:
    nll_sum: float
    tokens: int
    seconds: float
    topk_ids: torch.Tensor | None  # int32 [P, k], in window order
    topk_logprobs: torch.Tensor | None  # float16 [P, k]
    target_logprobs: torch.Tensor  # float32 [P]: log p(actual next token)

    @property
    def perplexity(self) -> float:
        return math.exp(self.nll_sum / self.tokens)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else float("inf")


def plan_windows(stream: Sequence[int], length: int, stride: int, max_windows: int | None = None) -> WindowPlan:
    """Windows of `length` tokens starting every `stride` tokens over the stream."""
    if not 0 < stride <= length:
        raise InputError(f"stride {stride} must be between 1 and the window length {length}", "set --stride <= --window")
    starts = list(range(0, len(stream) - length + 1, stride))
    if max_windows is not None:
        starts = starts[:max_windows]
    if not starts:
        raise InputError(
            f"the evaluation text has {len(stream)} tokens, fewer than one window of {length}",
            "use a shorter --window or more evaluation text",
        )
    ids = torch.tensor([list(stream[s : s + length]) for s in starts], dtype=torch.int64)
    first = torch.tensor([1] + [max(1, length - stride)] * (len(starts) - 1), dtype=torch.int64)
    return WindowPlan(ids, first)


def scored_rows(
    logits_fn: LogitsFn,
    plan: WindowPlan,
    batch_size: int = 8,
    on_batch: Callable[[int], None] | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(log-probabilities [n, V] in float32, targets [n]) of every window, in plan order.

    The one place that turns a model's logits into scored positions, so perplexity,
    KL divergence and top-1 agreement all see the same targets with the same context.
    """
    with torch.inference_mode():
        for begin in range(0, plan.input_ids.shape[0], batch_size):
            batch = plan.input_ids[begin : begin + batch_size]
            firsts = plan.first_target[begin : begin + batch_size]
            logits = logits_fn(batch)
            for row in range(batch.shape[0]):
                first = int(firsts[row])
                # logits at position p predict the token at p + 1
                logprobs = torch.log_softmax(logits[row, first - 1 : -1].float(), dim=-1)
                yield logprobs, batch[row, first:].to(logprobs.device)
            if on_batch is not None:
                on_batch(int(batch.numel()))


def score_windows(
    logits_fn: LogitsFn,
    plan: WindowPlan,
    batch_size: int = 8,
    topk: int = 0,
    on_batch: Callable[[int], None] | None = None,
) -> PerplexityResult:
    """Score every planned target; log-softmax in float32 whatever the model's dtype."""
    nll_sum = 0.0
    tokens = 0
    ids_out, lp_out, target_out = [], [], []
    started = time.perf_counter()
    for logprobs, targets in scored_rows(logits_fn, plan, batch_size, on_batch):
        target_lp = logprobs.gather(1, targets[:, None]).squeeze(1)
        nll_sum -= float(target_lp.sum(dtype=torch.float64))
        tokens += targets.numel()
        target_out.append(target_lp.cpu())
        if topk:
            values, indices = logprobs.topk(topk, dim=-1)
            ids_out.append(indices.to(torch.int32).cpu())
            lp_out.append(values.to(torch.float16).cpu())
    return PerplexityResult(
        nll_sum=nll_sum,
        tokens=tokens,
        seconds=time.perf_counter() - started,
        topk_ids=torch.cat(ids_out) if topk else None,
        topk_logprobs=torch.cat(lp_out) if topk else None,
        target_logprobs=torch.cat(target_out),
    )


def hf_logits_fn(model) -> LogitsFn:
    """Logits of a transformers causal LM, on the model's device."""
    device = next(model.parameters()).device

    def logits(input_ids: torch.Tensor) -> torch.Tensor:
        return model(input_ids=input_ids.to(device), use_cache=False).logits

    return logits
