"""NF4 through transformers + bitsandbytes on the tiny Llama (bitsandbytes is a dependency)."""

from __future__ import annotations

import bitsandbytes as bnb
import pytest
import torch
from safetensors.torch import load_file

from quantship.errors import InputError
from quantship.progress import stderr_console
from quantship.quantize.spec import VariantSpec
from quantship.quantize.variants import run_quantize
from quantship.rundir import read_json


def test_nf4_variant_reloads_with_4bit_layers_and_kept_layers_exact(tiny_run, tiny_checkpoint_template):
    spec = VariantSpec(name="nf4", method="nf4", overrides=[{"pattern": r"layers\.1\.self_attn\.k_proj"}])
    [result] = run_quantize(tiny_run, [spec], stderr_console())
    assert result.status == "done"
    folder = tiny_run.stage_dir("variants/nf4")
    manifest = read_json(folder / "manifest.json")
    assert manifest["artifact"]["quant_method"] == "bitsandbytes" and manifest["artifact"]["format"] == "nf4"
    assert manifest["group_size"] == 64
    details = manifest["details"]
    assert details["kept_bf16"] == ["lm_head", "model.layers.1.self_attn.k_proj"]
    assert details["quantized_modules"] == 13  # 2 layers x 7 projections, one kept
    # 4-bit codes + one fp32 absmax per 64 weights = 4.5, plus a per-layer quant map and
    # state (< 150 bytes) over layers of at least 64 x 64 weights
    assert 4.5 < details["quantized_linear_bits_per_weight"] < 4.5 + 8 * 150 / 4096
    assert manifest["bits_per_weight"] < 16

    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, device_map="cpu")
    original = load_file(str(tiny_checkpoint_template / "model.safetensors"))
    assert isinstance(model.model.layers[0].mlp.up_proj, bnb.nn.Linear4bit)
    kept = model.model.layers[1].self_attn.k_proj
    assert not isinstance(kept, bnb.nn.Linear4bit)
    assert torch.equal(kept.weight.data, original["model.layers.1.self_attn.k_proj.weight"])
    # the dequantized 4-bit weights take at most 16 values per 64-weight block
    layer = model.model.layers[0].mlp.up_proj
    weight = bnb.functional.dequantize_4bit(layer.weight.data, layer.weight.quant_state).float()
    blocks = weight.reshape(-1, 64)
    assert max(len(torch.unique(b)) for b in blocks) <= 16
    assert torch.allclose(weight, original["model.layers.0.mlp.up_proj.weight"].float(), atol=0.05)


def test_a_real_nf4_variant_is_refused_by_vllm_cpu_with_the_matrix_reason(tiny_run):
    """What the quantize stage wrote is identified as nf4 by serve, and this CPU's matrix cell refuses it."""
    from quantship.serve import preflight
    from quantship.serve.target import from_variant

    [result] = run_quantize(tiny_run, [VariantSpec(name="nf4", method="nf4")], stderr_console())
    assert result.status == "done"
    target = from_variant(tiny_run.root, "nf4")
    assert target.artifact.format == "nf4" and target.artifact.vllm_quantization == "bitsandbytes"
    check = preflight.compatibility(target, "vllm-cpu", None)
    assert check.status == "failed" and "x86 vLLM has no bitsandbytes kernels" in check.detail


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"group_size": 32}, "do not apply to NF4"),
        ({"scheme": "FP4"}, "only scheme NF4"),
        ({"overrides": [{"pattern": "k_proj", "precision": "8bit"}]}, "not both per layer"),
        ({"overrides": [{"pattern": "nothing"}]}, "matches no Linear layer"),
    ],
)
def test_nf4_refusals(tiny_run, fields, expected):
    with pytest.raises(InputError, match=expected):
        run_quantize(tiny_run, [VariantSpec(name="n", method="nf4", **fields)], stderr_console())
