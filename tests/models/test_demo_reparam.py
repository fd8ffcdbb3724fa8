"""The demo model's reparametrization (quantship.models.reparam) on tiny random Llamas built in process.

Same function (logits equal in float32), weights moved off a Q4_1 grid they were snapped
onto, and reproducible from the seed.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType
from gguf.quants import dequantize, quantize

from quantship.models.reparam import DEFAULT_SEED, reparametrize

BLOCK_KINDS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def tiny_llama(tie: bool = True, bias: bool = False, seed: int = 0):
    """2 layers, hidden 64, 4 query heads on 2 kv heads (GQA), random norms: every folded pair is exercised."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=tie, attention_bias=bias,
        mlp_bias=bias, initializer_range=0.2,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).float().eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("norm.weight"):
                parameter.copy_(torch.empty_like(parameter).uniform_(0.5, 1.5))
            elif name.endswith(".bias"):
                parameter.normal_(0, 0.2)
    return model


def block_weight_names(config) -> list[str]:
    return [
        f"model.layers.{i}.{'self_attn' if kind in BLOCK_KINDS[:4] else 'mlp'}.{kind}.weight"
        for i in range(config.num_hidden_layers)
        for kind in BLOCK_KINDS
    ]


def with_state(model, state):
    from transformers import LlamaForCausalLM

    other = LlamaForCausalLM(model.config).float().eval()
    other.load_state_dict(state, strict=False)  # a tied lm_head follows the embedding
    return other


def round_trip_error(state, names, qtype) -> float:
    num = den = 0.0
    for name in names:
        w = state[name].float().numpy()
        num += float(((w - dequantize(quantize(w, qtype), qtype)) ** 2).sum())
        den += float((w**2).sum())
    return (num / den) ** 0.5


@pytest.mark.parametrize("tie,bias", [(True, False), (False, True)], ids=["tied", "untied-biases"])
def test_reparametrized_model_computes_the_same_logits(tie, bias):
    model = tiny_llama(tie=tie, bias=bias)
    state = model.state_dict()
    new_state = reparametrize(state, model.config, seed=DEFAULT_SEED)
    names = block_weight_names(model.config)
    # not vacuous: every block weight and every folded norm really changed, by about sigma
    for name in names + [n for n in state if n.startswith("model.layers.") and n.endswith("norm.weight")]:
        change = ((new_state[name] - state[name]).norm() / state[name].norm()).item()
        assert change > 0.05, name
    # what tying forbids touching is untouched
    assert torch.equal(new_state["model.embed_tokens.weight"], state["model.embed_tokens.weight"])
    assert torch.equal(new_state["model.norm.weight"], state["model.norm.weight"])

    ids = torch.randint(0, model.config.vocab_size, (2, 48), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(ids).logits
        got = with_state(model, new_state)(ids).logits
    assert expected.abs().max() > 1.0  # a function worth comparing
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_a_misplaced_scale_is_caught():
    """The tolerance above is tight enough to see a reparametrization that is not exact."""
    model = tiny_llama()
    new_state = reparametrize(model.state_dict(), model.config)
    new_state["model.layers.1.self_attn.o_proj.weight"] = model.state_dict()["model.layers.1.self_attn.o_proj.weight"]
    ids = torch.randint(0, model.config.vocab_size, (1, 32), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        difference = (with_state(model, new_state)(ids).logits - model(ids).logits).abs().max().item()
    assert difference > 1e-2


def test_weights_snapped_to_a_q4_1_grid_leave_it():
    model = tiny_llama(seed=3)
    names = block_weight_names(model.config)
    state = model.state_dict()
    for name in names:  # what the demo GGUF gives: every block weight exactly on a Q4_1 grid
        w = state[name].numpy()
        state[name] = torch.from_numpy(dequantize(quantize(w, GGMLQuantizationType.Q4_1), GGMLQuantizationType.Q4_1).copy())
    before = round_trip_error(state, names, GGMLQuantizationType.Q4_1)
    after_state = {k: v.to(torch.bfloat16) for k, v in reparametrize(state, model.config).items()}  # as stored
    after = round_trip_error(after_state, names, GGMLQuantizationType.Q4_1)
    q4_0_after = round_trip_error(after_state, names, GGMLQuantizationType.Q4_0)
    assert before < 1e-3
    assert after > 0.03 and after > 0.6 * q4_0_after, (after, q4_0_after)


def test_same_seed_same_weights_other_seed_other_weights():
    model = tiny_llama()
    state = model.state_dict()
    first, again = reparametrize(state, model.config, seed=7), reparametrize(state, model.config, seed=7)
    other = reparametrize(state, model.config, seed=8)
    assert first.keys() == again.keys() == state.keys()
    assert all(torch.equal(first[name], again[name]) for name in first)
    assert not torch.equal(first["model.layers.0.self_attn.q_proj.weight"], other["model.layers.0.self_attn.q_proj.weight"])
    assert all(v.dtype == torch.float32 for v in first.values())
    assert np.isfinite(sum(float(v.abs().sum()) for v in first.values()))
