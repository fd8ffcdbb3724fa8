"""The llama.cpp scorer against transformers on the demo model: same tokens in, same distributions out.

The demo checkpoint is the dequantization of the Q4_1 GGUF it ships in, exactly
reparametrized off the grid (the same function up to bf16 rounding), so the GGUF scored
through llama-cpp-python and the checkpoint scored through transformers must agree
closely; a shifted position or a wrong token mapping would not.
"""

from __future__ import annotations

import pytest
import torch

from quantship.evaluate.perplexity import hf_logits_fn
from quantship.models.loading import load_causal_lm, load_tokenizer
from quantship.validate.windows import topk_tail_kl
from tests.support.requires import demo_gguf_or_skip, requires

# llama-cpp-python is built by `quantship setup llama.cpp`, which checks its bindings.
pytestmark = [pytest.mark.e2e, requires("llama.cpp")]


def test_gguf_logits_and_greedy_match_transformers(demo_checkpoint):
    from quantship.validate.scorers import LlamaCppScorer

    tokenizer = load_tokenizer(demo_checkpoint)
    ids = torch.tensor([tokenizer("The capital of France is Paris. The capital of Germany is Berlin. " * 4)["input_ids"][:64]])
    model = load_causal_lm(demo_checkpoint, "float32", "cpu")
    with torch.inference_mode():
        hf = torch.log_softmax(hf_logits_fn(model)(ids)[0].float(), -1)
    scorer = LlamaCppScorer(demo_gguf_or_skip(), tokenizer, n_ctx=256)
    try:
        gg = torch.log_softmax(scorer.logits(ids)[0].float(), -1)
        prompt = tokenizer("The capital of France is")["input_ids"]
        gen = scorer.generate("france", prompt, 4, 5)
    finally:
        scorer.close()
    assert gg.shape == hf.shape
    top = hf.topk(20, -1)
    kl = topk_tail_kl(top.indices, top.values, gg)
    assert float(kl.mean()) < 0.05
    assert float((gg.argmax(-1) == hf.argmax(-1)).float().mean()) > 0.9
    assert "Paris" in gen.text and gen.topk_ids.shape == (len(gen.ids), 5) and gen.topk_ids[0, 0] == gen.ids[0]


def test_a_shared_prefix_is_evaluated_once_and_scores_as_if_fresh(demo_checkpoint):
    """Multiple-choice items score one context with each choice: only the choice is evaluated again."""
    from quantship.validate.scorers import LlamaCppScorer

    tokenizer = load_tokenizer(demo_checkpoint)
    context = tokenizer("Question: what is the capital of France? Answer:")["input_ids"]
    first = context + tokenizer(" Paris, on the Seine.", add_special_tokens=False)["input_ids"]
    second = context + tokenizer(" Berlin, in Germany.", add_special_tokens=False)["input_ids"]
    scorer = LlamaCppScorer(demo_gguf_or_skip(), tokenizer, n_ctx=256)
    try:
        fresh = torch.log_softmax(scorer.logits(torch.tensor([second]))[0].float(), -1)
        scorer.generate("other", tokenizer("Once upon a time")["input_ids"], 3, 5)  # another prompt in between
        scorer.logits(torch.tensor([first]))
        evaluated = []
        eval_ = scorer.llm.eval
        scorer.llm.eval = lambda tokens: (evaluated.append(len(tokens)), eval_(tokens))[1]
        reused = torch.log_softmax(scorer.logits(torch.tensor([second]))[0].float(), -1)
    finally:
        scorer.close()
    assert evaluated == [len(second) - len(context)]
    assert reused.shape == fresh.shape
    assert torch.equal(reused.argmax(-1), fresh.argmax(-1))
    assert float((reused - fresh).abs().max()) < 0.05
