"""The demo checkpoint is what transformers' own GGUF loader reads, reparametrized off the Q4_1 grid.

The loader's float32 weights, put through the same seeded reparametrization and rounded
once to bf16, give bit for bit the shipped checkpoint's logits.
"""

from __future__ import annotations

import pytest
import torch

from quantship.models import reparam
from quantship.models.demo import locate_demo_gguf, unpermute_rope

PROMPT = "The capital of France is Paris. The capital of Germany is"


def test_unpermute_inverts_llama_cpp_permutation():  # pure numpy: part of the fast suite
    def permute(weights, n_head):  # llama.cpp convert_hf_to_gguf.py's LlamaModel.permute
        return weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:]).swapaxes(1, 2).reshape(weights.shape)

    original = torch.randn(3 * 64, 8).numpy()
    assert (unpermute_rope(permute(original, 3), 3) == original).all()


@pytest.mark.e2e
def test_logits_equal_reparametrized_transformers_gguf_loader_and_greedy_says_berlin(demo_checkpoint):
    import json

    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = locate_demo_gguf()
    tokenizer = AutoTokenizer.from_pretrained(demo_checkpoint)
    ids = tokenizer(PROMPT, return_tensors="pt").input_ids
    ours = AutoModelForCausalLM.from_pretrained(demo_checkpoint, dtype=torch.float32).eval()
    reference = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32).eval()
    record = json.loads((demo_checkpoint / "quantship-source.json").read_text())["reparametrization"]
    assert (record["seed"], record["sigma"]) == (reparam.DEFAULT_SEED, reparam.DEFAULT_SIGMA)
    plain_q = reference.model.layers[0].self_attn.q_proj.weight.detach().to(torch.bfloat16).float()
    state = reparam.reparametrize(reference.state_dict(), reference.config, record["seed"], record["sigma"])
    # same float32 arithmetic, same single bf16 rounding, then float32 compute
    reference.load_state_dict({name: value.to(torch.bfloat16).float() for name, value in state.items()})
    with torch.no_grad():
        difference = (ours(ids).logits - reference(ids).logits).abs().max().item()
    assert difference == 0.0
    ours_q = ours.model.layers[0].self_attn.q_proj.weight.detach()
    assert ((ours_q - plain_q).norm() / plain_q.norm()).item() > 0.05  # the weights did move
    generated = ours.generate(ids, max_new_tokens=4, do_sample=False)
    assert tokenizer.decode(generated[0, ids.shape[1]:]).startswith(" Berlin")
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.chat_template


@pytest.mark.e2e
def test_tokenizer_is_plain_byte_level_bpe_as_llama_cpp_expects(demo_checkpoint):
    import json

    from transformers import AutoTokenizer

    spec = json.loads((demo_checkpoint / "tokenizer.json").read_text())
    assert spec["model"]["type"] == "BPE" and not spec["model"].get("byte_fallback")
    assert spec["decoder"]["type"] == "ByteLevel"
    tokenizer = AutoTokenizer.from_pretrained(demo_checkpoint)
    for text in ("héllo wörld 🙂", "def f(x):\n\treturn x", " Berlin"):
        assert tokenizer.decode(tokenizer(text, add_special_tokens=False).input_ids) == text
