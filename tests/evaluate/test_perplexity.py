"""Strided perplexity: every target scored once, equal to transformers' own loss."""

from __future__ import annotations

import math

import pytest
import torch

from quantship.errors import InputError
from quantship.evaluate.perplexity import hf_logits_fn, plan_windows, score_windows


def test_non_overlapping_windows_score_all_but_the_first_token_of_each():
    plan = plan_windows(list(range(100)), length=10, stride=10)
    assert plan.input_ids.shape == (10, 10)
    assert plan.first_target.tolist() == [1] * 10
    assert plan.scored_positions == 90


def test_strided_windows_score_each_target_exactly_once():
    stream = list(range(50))
    plan = plan_windows(stream, length=10, stride=4)
    scored = []
    for start, (row, first) in enumerate(zip(plan.input_ids, plan.first_target, strict=True)):
        scored.extend(row[int(first):].tolist())
        assert int(first) == (1 if start == 0 else 6)  # at least length - stride tokens of context
    assert len(scored) == len(set(scored))
    assert scored == list(range(1, 1 + len(scored)))


def test_plan_errors_name_the_fix():
    with pytest.raises(InputError, match="fewer than one window"):
        plan_windows(list(range(5)), length=10, stride=10)
    with pytest.raises(InputError, match="stride 20 must be between"):
        plan_windows(list(range(50)), length=10, stride=20)


def test_perplexity_equals_transformers_loss_and_ignores_batch_size(tiny_checkpoint):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_checkpoint, dtype=torch.float32).eval()
    generator = torch.Generator().manual_seed(0)
    stream = torch.randint(0, model.config.vocab_size, (300,), generator=generator).tolist()
    plan = plan_windows(stream, length=64, stride=64)
    result = score_windows(hf_logits_fn(model), plan, batch_size=3, topk=5)

    nll, count = 0.0, 0
    with torch.no_grad():
        for row in plan.input_ids:
            loss = model(input_ids=row[None], labels=row[None]).loss
            nll += float(loss) * (row.numel() - 1)
            count += row.numel() - 1
    assert result.tokens == count
    assert math.isclose(result.perplexity, math.exp(nll / count), rel_tol=1e-5)

    again = score_windows(hf_logits_fn(model), plan, batch_size=1, topk=5)
    assert torch.allclose(again.target_logprobs, result.target_logprobs, atol=1e-5)
    assert result.topk_ids.shape == (count, 5) and result.topk_logprobs.dtype == torch.float16
    # the top-1 log-probability bounds the target's from above
    assert bool((result.topk_logprobs[:, 0].float() >= result.target_logprobs - 1e-2).all())
