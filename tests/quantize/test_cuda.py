"""llm-compressor and NF4 quantization on a CUDA GPU, on the tiny Llama.

Marked `gpu`: skipped without CUDA (tests/support/plugin.py), under CI too. These have
never run on a GPU (README, Development).
"""

from __future__ import annotations

import bitsandbytes as bnb
import pytest
import torch
from safetensors.torch import load_file

from quantship.progress import stderr_console
from quantship.quantize.spec import VariantSpec
from quantship.quantize.variants import run_quantize
from quantship.rundir import read_json

pytestmark = pytest.mark.gpu
IDS = torch.arange(1, 33)[None]


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(IDS.to(model.device)).logits.float().cpu()


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got - want).norm() / want.norm())


def test_rtn_on_cuda_rounds_every_weight_to_its_nearest_grid_point(tiny_run, tiny_checkpoint_template):
    from transformers import AutoModelForCausalLM, CompressedTensorsConfig

    [result] = run_quantize(tiny_run, [VariantSpec(name="rtn", method="rtn", scheme="W4A16", group_size=32)], stderr_console())
    assert result.status == "done", result.error
    folder = tiny_run.stage_dir("variants/rtn")
    assert read_json(folder / "manifest.json")["details"]["device"] == "cuda"
    model = AutoModelForCausalLM.from_pretrained(folder, quantization_config=CompressedTensorsConfig(dequantize=True))
    original = load_file(str(tiny_checkpoint_template / "model.safetensors"))["model.layers.0.mlp.up_proj.weight"].float()
    weight = model.model.layers[0].mlp.up_proj.weight.data.float()
    # symmetric 4-bit, group 32: the step is max|w| / 7.5 at most per group, so rounding moves
    # a weight by at most half of it (plus the bf16 storage of the scale)
    groups, grid = original.reshape(-1, 32), weight.reshape(-1, 32)
    step = groups.abs().amax(dim=1, keepdim=True) / 7
    assert ((groups - grid).abs() <= step / 2 * 1.02 + 1e-6).all()
    assert max(len(torch.unique(g)) for g in grid) <= 16


def test_gptq_w8_on_cuda_keeps_the_logits_of_the_baseline(tiny_run, tiny_checkpoint_template):
    from transformers import AutoModelForCausalLM

    [result] = run_quantize(tiny_run, [VariantSpec(name="g8", method="gptq", scheme="W8A16", group_size=32)], stderr_console())
    assert result.status == "done", result.error
    folder = tiny_run.stage_dir("variants/g8")
    manifest = read_json(folder / "manifest.json")
    assert manifest["details"]["device"] == "cuda" and manifest["calibration_sha256"] is not None
    baseline = AutoModelForCausalLM.from_pretrained(tiny_checkpoint_template, dtype=torch.float32).to("cuda")
    variant = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).to("cuda")
    # 8-bit weights move each weight by < 0.4% of its group's range: logits stay within a few percent
    assert relative_error(logits(variant), logits(baseline)) < 0.05


def test_nf4_on_cuda_quantizes_on_the_gpu_and_reloads_with_4bit_layers(tiny_run, tiny_checkpoint_template):
    from transformers import AutoModelForCausalLM

    [result] = run_quantize(tiny_run, [VariantSpec(name="nf4", method="nf4")], stderr_console())
    assert result.status == "done", result.error
    folder = tiny_run.stage_dir("variants/nf4")
    assert read_json(folder / "manifest.json")["details"]["device"] == "cuda"
    model = AutoModelForCausalLM.from_pretrained(folder, device_map="cuda")
    layer = model.model.layers[0].mlp.up_proj
    assert isinstance(layer, bnb.nn.Linear4bit) and layer.weight.device.type == "cuda"
    weight = bnb.functional.dequantize_4bit(layer.weight.data, layer.weight.quant_state).float().cpu()
    original = load_file(str(tiny_checkpoint_template / "model.safetensors"))["model.layers.0.mlp.up_proj.weight"].float()
    assert max(len(torch.unique(b)) for b in weight.reshape(-1, 64)) <= 16  # NF4: 16 levels per block
    assert torch.allclose(weight, original, atol=0.05)
