"""AWQ and FP8-static with llm-compressor on CPU, on the tiny Llama: the two calibrated
methods the docs list that no other test runs.

What makes each method itself is checked, not only that files appear: AWQ folds its
activation-aware scales into the preceding norms (plain RTN leaves them untouched), and
FP8-static stores one activation scale per layer, calibrated from the run's windows.
"""

from __future__ import annotations

import torch
from safetensors.torch import load_file

from quantship.data.calibration import load_calibration
from quantship.progress import stderr_console
from quantship.quantize.spec import VariantSpec
from quantship.quantize.variants import run_quantize
from quantship.rundir import read_json

FP8_E4M3_MAX = 448.0  # largest finite float8_e4m3fn value


def test_awq_w4a16_on_cpu_scales_the_norms_and_packs_4bit_groups(tiny_run, tiny_checkpoint_template):
    specs = [VariantSpec(name="awq", method="awq", scheme="W4A16", group_size=32),
             VariantSpec(name="rtn", method="rtn", scheme="W4A16", group_size=32)]
    results = run_quantize(tiny_run, specs, stderr_console())
    assert [r.status for r in results] == ["done", "done"], [r.error for r in results]
    manifest = read_json(tiny_run.stage_dir("variants/awq") / "manifest.json")
    details = manifest["details"]
    assert manifest["calibration_sha256"] == load_calibration(tiny_run).sha256
    on_cpu = not torch.accelerator.is_available()
    assert details["cpu_workarounds"] == (["AWQ: pin_memory skipped (CPU-only torch)"] if on_cpu else [])
    assert "AWQModifier" in (tiny_run.stage_dir("variants/awq") / "recipe.yaml").read_text()
    # 4-bit codes + one bf16 scale per 32 weights
    assert details["quantized_linear_bits_per_weight"] == 4.5
    assert details["quantization_config"]["config_groups"]["group_0"]["weights"]["group_size"] == 32

    baseline = load_file(str(tiny_checkpoint_template / "model.safetensors"))
    awq = load_file(str(tiny_run.stage_dir("variants/awq") / "model.safetensors"))
    rtn = load_file(str(tiny_run.stage_dir("variants/rtn") / "model.safetensors"))
    norms = [name for name in baseline if name.endswith("layernorm.weight")]
    assert all(torch.equal(rtn[n], baseline[n]) for n in norms)  # RTN touches only the Linear weights
    # AWQ's grid search keeps a scale of 1 where scaling does not help, and folds the
    # others into the norm before the layers it smooths (on this model: 2 of the 4 norms)
    assert any(not torch.equal(awq[n], baseline[n]) for n in norms)


def test_fp8_static_on_cpu_stores_the_calibrated_activation_scale(tiny_run, tiny_checkpoint_template):
    from transformers import AutoModelForCausalLM

    [result] = run_quantize(tiny_run, [VariantSpec(name="fp8s", method="fp8-static")], stderr_console())
    assert result.status == "done", result.error
    folder = tiny_run.stage_dir("variants/fp8s")
    details = read_json(folder / "manifest.json")["details"]
    assert "F8_E4M3" in details["tensor_dtypes"]
    activations = details["quantization_config"]["config_groups"]["group_0"]["input_activations"]
    assert activations["type"] == "float" and activations["num_bits"] == 8 and activations["dynamic"] is False

    tensors = load_file(str(folder / "model.safetensors"))
    scales = {name: tensors[name] for name in tensors if name.endswith(".input_scale")}
    assert len(scales) == 14  # 2 layers x 7 projections; lm_head stays bf16
    # Layer 0's q_proj sees input_layernorm(embedding) of each calibration token, untouched
    # by any quantized layer before it: its static scale is that input's abs-max over 448.
    model = AutoModelForCausalLM.from_pretrained(tiny_checkpoint_template, dtype=torch.float32).eval()
    seen = []
    hook = model.model.layers[0].self_attn.q_proj.register_forward_pre_hook(lambda _m, args: seen.append(args[0].abs().max()))
    with torch.no_grad():
        for row in load_calibration(tiny_run).input_ids:
            model(row[None])
    hook.remove()
    expected = float(max(seen)) / FP8_E4M3_MAX
    got = float(scales["model.layers.0.self_attn.q_proj.input_scale"].float())
    assert abs(got - expected) <= 0.02 * expected, (got, expected)
