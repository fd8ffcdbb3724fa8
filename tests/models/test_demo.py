"""The demo checkpoint is an exact copy of what transformers' own GGUF loader reads."""

from __future__ import annotations

import pytest
import torch

from quantship.models.demo import locate_demo_gguf, unpermute_rope

PROMPT = "The capital of France is Paris. The capital of Germany is"


def test_unpermute_inverts_llama_cpp_permutation():  # pure numpy: part of the fast suite
    def permute(weights, n_head):  # llama.cpp convert_hf_to_gguf.py's LlamaModel.permute
        return weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:]).swapaxes(1, 2).reshape(weights.shape)

    original = torch.randn(3 * 64, 8).numpy()
    assert (unpermute_rope(permute(original, 3), 3) == original).all()


@pytest.mark.e2e
def test_logits_equal_transformers_gguf_loader_and_greedy_says_berlin(demo_checkpoint):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = locate_demo_gguf()
    tokenizer = AutoTokenizer.from_pretrained(demo_checkpoint)
    ids = tokenizer(PROMPT, return_tensors="pt").input_ids
    ours = AutoModelForCausalLM.from_pretrained(demo_checkpoint, dtype=torch.float32).eval()
    reference = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.bfloat16).eval()
    for parameter in reference.parameters():  # same bf16 rounding, then float32 compute
        parameter.data = parameter.data.float()
    with torch.no_grad():
        difference = (ours(ids).logits - reference(ids).logits).abs().max().item()
    assert difference == 0.0
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
