"""Perplexity, KL divergence and top-1 agreement on the baseline's own evaluation windows.

KL(baseline || variant) uses the baseline's stored top-k: the k tokens keep their own
probabilities and everything else is merged into one tail bucket on both sides
(tail = 1 - sum of the k probabilities). That is the exact KL between the two
distributions coarsened to k+1 outcomes, hence a lower bound of the full-vocabulary
KL that is tight when the tail is small; no renormalisation distorts the top-k mass.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from quantship.evaluate.perplexity import LogitsFn, WindowPlan, scored_rows

_EPS = 1e-12


@dataclass
class WindowComparison:
    nll_sum: float
    tokens: int
    kl: torch.Tensor  # float64 [P]
    top1_agree: torch.Tensor  # bool [P]

    @property
    def perplexity(self) -> float:
        mean = self.nll_sum / self.tokens
        return math.exp(mean) if mean < 700 else math.inf


def topk_tail_kl(base_ids: torch.Tensor, base_logprobs: torch.Tensor, variant_logprobs: torch.Tensor) -> torch.Tensor:
    """Per-row KL over (baseline top-k + tail bucket); `variant_logprobs` is the full [N, V] log-softmax."""
    return tail_bucket_kl(base_logprobs, variant_logprobs.double().gather(1, base_ids.long()))


def tail_bucket_kl(base_logprobs: torch.Tensor, q_log: torch.Tensor, known: torch.Tensor | None = None) -> torch.Tensor:
    """KL over (baseline top-k + tail) from the variant's log-probabilities of those k tokens.

    `known` [N, k] marks the tokens whose variant log-probability is known (a server that
    returns only its own top-k may not rank every baseline token); the unknown ones are
    merged into the tail bucket on both sides, a coarser partition of the same two
    distributions, so the result is still an exact KL of a coarsening: a lower bound.
    """
    p_log, q_log = base_logprobs.double(), q_log.double()
    if known is not None:
        p_log = torch.where(known, p_log, -math.inf)
        q_log = torch.where(known, q_log, -math.inf)
    p, q = p_log.exp(), q_log.exp()
    p_tail = (1 - p.sum(1)).clamp(min=0)
    q_tail = (1 - q.sum(1)).clamp(min=_EPS)
    head = torch.where(p > 0, p * (p_log - q_log), torch.zeros_like(p)).sum(1)
    tail = torch.where(p_tail > 0, p_tail * (p_tail.clamp(min=_EPS).log() - q_tail.log()), torch.zeros_like(p_tail))
    return (head + tail).clamp(min=0)


def compare_windows(
    logits_fn: LogitsFn,
    plan: WindowPlan,
    base_topk_ids: torch.Tensor,
    base_topk_logprobs: torch.Tensor,
    batch_size: int = 4,
    on_batch: Callable[[int], None] | None = None,
) -> WindowComparison:
    """Score the variant on every planned target, in the same order as the baseline stored them."""
    nll_sum, tokens, offset = 0.0, 0, 0
    kls, agrees = [], []
    for logprobs, targets in scored_rows(logits_fn, plan, batch_size, on_batch):
        logprobs, targets = logprobs.cpu(), targets.cpu()
        nll_sum -= float(logprobs.gather(1, targets[:, None]).sum(dtype=torch.float64))
        n = targets.numel()
        ids = base_topk_ids[offset : offset + n]
        kls.append(topk_tail_kl(ids, base_topk_logprobs[offset : offset + n], logprobs))
        agrees.append(logprobs.argmax(-1) == ids[:, 0].long())
        tokens += n
        offset += n
    return WindowComparison(nll_sum, tokens, torch.cat(kls), torch.cat(agrees))
