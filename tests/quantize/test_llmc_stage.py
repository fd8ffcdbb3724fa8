"""The quantize stage on the tiny Llama: real llm-compressor runs, manifests, failures."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from quantship.errors import InputError, QuantshipError
from quantship.progress import stderr_console
from quantship.quantize import llmcompressor_backend
from quantship.quantize.spec import VariantSpec
from quantship.quantize.variants import run_quantize, safetensors_storage
from quantship.rundir import read_json
from tests.support.cli import in_process

RTN = VariantSpec(
    name="rtn",
    method="rtn",
    group_size=32,
    overrides=[{"pattern": r"layers\.0\.mlp\.down_proj", "precision": "bf16"}, {"pattern": r"v_proj", "precision": "8bit"}],
)


def test_rtn_variant_manifest_bits_and_reload_hold_the_quantized_values(tiny_run, tiny_checkpoint_template):
    [result] = run_quantize(tiny_run, [RTN], stderr_console())
    assert result.status == "done"
    folder = tiny_run.stage_dir("variants/rtn")
    manifest = read_json(folder / "manifest.json")
    assert manifest["scheme"] == "W4A16" and manifest["group_size"] == 32 and manifest["calibration_sha256"] is None
    assert manifest["artifact"] == {"container": "safetensors", "quant_method": "compressed-tensors", "gguf_type": None, "format": "w4a16"}
    assert manifest["overrides"] == [o.model_dump() for o in RTN.overrides]
    assert manifest["size_bytes"] == sum(v["bytes"] for v in manifest["outputs"].values())
    assert {"model.safetensors", "config.json", "recipe.yaml", "tokenizer.json"} <= set(manifest["outputs"])
    qconfig = json.loads((folder / "config.json").read_text())["quantization_config"]
    assert sorted(qconfig["ignore"]) == ["lm_head", "model.layers.0.mlp.down_proj"]  # resolved by compressed-tensors

    # bits/weight from the bytes written: the whole file, and the quantized layers alone
    file_bytes = (folder / "model.safetensors").stat().st_size
    params = sum(t.numel() for t in load_file(str(tiny_checkpoint_template / "model.safetensors")).values())
    assert abs(manifest["bits_per_weight"] * params / 8 - file_bytes) < 8192  # header + rounding
    # 4-bit codes + one bf16 scale per 32 weights = 4.5 bits; v_proj 8 + 0.5; weighted by layer size
    storage = safetensors_storage(folder)
    four = [m for m in storage.quantized_modules if "v_proj" not in m]
    eight = [m for m in storage.quantized_modules if "v_proj" in m]
    n4 = sum(storage.logical[f"{m}.weight"] for m in four)
    n8 = sum(storage.logical[f"{m}.weight"] for m in eight)
    assert storage.parameters == params
    assert manifest["details"]["quantized_linear_bits_per_weight"] == pytest.approx((4.5 * n4 + 8.5 * n8) / (n4 + n8), abs=1e-3)

    # transformers loads it packed (decompressing in forward) or dequantized: same logits,
    # and the weights it computes with lie on the quantized grid
    from transformers import AutoModelForCausalLM, CompressedTensorsConfig

    packed = AutoModelForCausalLM.from_pretrained(folder)
    assert hasattr(packed.model.layers[0].mlp.up_proj, "weight_packed")
    model = AutoModelForCausalLM.from_pretrained(folder, quantization_config=CompressedTensorsConfig(dequantize=True))
    ids = torch.arange(1, 17)[None]
    with torch.no_grad():
        assert torch.equal(packed(ids).logits, model(ids).logits)
    original = load_file(str(tiny_checkpoint_template / "model.safetensors"))
    layer0 = model.model.layers[0]

    def levels_per_group(weight: torch.Tensor) -> int:
        groups = weight.float().reshape(weight.shape[0], -1, 32)
        return max(len(torch.unique(g)) for row in groups for g in row)

    assert levels_per_group(layer0.mlp.up_proj.weight.data) <= 16
    assert 16 < levels_per_group(layer0.self_attn.v_proj.weight.data) <= 256
    assert torch.equal(layer0.mlp.down_proj.weight.data, original["model.layers.0.mlp.down_proj.weight"])
    assert not torch.equal(layer0.mlp.up_proj.weight.data, original["model.layers.0.mlp.up_proj.weight"])
    assert torch.equal(model.lm_head.weight.data, original["lm_head.weight"])


def test_unchanged_variant_is_skipped_and_force_redoes_it(tiny_run):
    spec = VariantSpec(name="fp8", method="fp8-dynamic")
    [first] = run_quantize(tiny_run, [spec], stderr_console())
    stamp = read_json(tiny_run.stage_dir("variants/fp8") / "manifest.json")["started_at"]
    [again] = run_quantize(tiny_run, [spec], stderr_console())
    assert (first.status, again.status) == ("done", "skipped")
    assert again.bits_per_weight == first.bits_per_weight
    [forced] = run_quantize(tiny_run, [spec], stderr_console(), force=True)
    assert forced.status == "done"
    assert read_json(tiny_run.stage_dir("variants/fp8") / "manifest.json")["started_at"] >= stamp


def test_gptq_records_the_calibration_it_used(tiny_run):
    [result] = run_quantize(tiny_run, [VariantSpec(name="g", method="gptq", group_size=32, act_order=True)], stderr_console())
    manifest = read_json(tiny_run.stage_dir("variants/g") / "manifest.json")
    calibration = read_json(tiny_run.stage_dir("calibration") / "manifest.json")
    assert result.status == "done"
    assert manifest["calibration_sha256"] == calibration["outputs"]["tokens.safetensors"]["sha256"]
    assert manifest["inputs"]["calibration"] == manifest["calibration_sha256"]
    assert manifest["details"]["plan"]["actorder"] == "weight"


def _explode(spec, ctx, out_dir):
    (out_dir / "model.safetensors").write_bytes(b"half written")
    raise RuntimeError("boom in the quantizer")


def test_failed_variant_leaves_nothing_and_keep_going_finishes_the_others(tiny_run, monkeypatch):
    real = llmcompressor_backend.BACKEND.quantize

    def quantize(spec, ctx, out_dir):
        return _explode(spec, ctx, out_dir) if spec.name == "bad" else real(spec, ctx, out_dir)

    monkeypatch.setattr(llmcompressor_backend.BACKEND, "quantize", quantize)
    specs = [
        VariantSpec(name="bad", method="rtn", group_size=32),
        VariantSpec(name="refused", method="rtn", group_size=128),  # 64-wide layers
        VariantSpec(name="good", method="rtn", group_size=32),
    ]
    results = run_quantize(tiny_run, specs, stderr_console(), keep_going=True)
    assert [r.status for r in results] == ["failed", "refused", "done"]
    assert "RuntimeError: boom in the quantizer" in results[0].error
    assert "group size 128 does not divide" in results[1].error
    variants = tiny_run.root / "variants"
    assert sorted(p.name for p in variants.iterdir()) == ["good"]  # no folder, no staging left behind

    # without --keep-going the refusal stops the stage before any work
    with pytest.raises(InputError, match="group size 128"):
        run_quantize(tiny_run, [VariantSpec(name="other", method="rtn", group_size=32), specs[1]], stderr_console())
    assert not (variants / "other").exists()
    # and a failure stops it at that variant, in one line
    with pytest.raises(QuantshipError, match="variant 'bad' failed in its backend"):
        run_quantize(tiny_run, specs[:1], stderr_console())


def test_methods_that_need_calibration_are_refused_without_it(tiny_checkpoint, tmp_path):
    from tests.support.tiny_runs import make_run

    run = make_run(tiny_checkpoint, tmp_path / "run", calibrate=False)
    with pytest.raises(InputError, match="needs calibration data.*quantship calibrate"):
        run_quantize(run, [VariantSpec(name="g", method="gptq", group_size=32)], stderr_console())


def test_unknown_architecture_is_refused(tiny_checkpoint):
    config = json.loads((tiny_checkpoint / "config.json").read_text())
    config["model_type"] = "no-such-model"
    (tiny_checkpoint / "config.json").write_text(json.dumps(config))
    with pytest.raises(InputError, match="transformers cannot build a causal LM"):
        llmcompressor_backend.model_layers(tiny_checkpoint)


def _cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    return in_process(monkeypatch, capsys, "quantize", *args)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], "no variants requested"),
        (["--variant", "justaname"], "is not NAME:METHOD"),
        (["--variant", "a:nosuch"], "method: Input should be"),
        (["--variant", "a:rtn:W3A16"], "cannot produce scheme 'W3A16'"),
        (["--variant", "a:rtn"], "group size 128 does not divide"),
        (["--variant", "a:fp8-dynamic", "--group-size", "64"], "--group-size applies to none"),
        (["--variant", "a:rtn", "--group-size", "sixty"], "not a number or auto"),
        (["--variant", "a:rtn", "--group-size", "32", "--keep", "nothing_matches"], "matches no Linear layer"),
        (["--variant", "a:rtn:W4A16", "--variant", "a:gptq"], "must be unique"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(tiny_run, monkeypatch, capsys, args, expected):
    code, out, err = _cli(monkeypatch, capsys, "--run-dir", str(tiny_run.root), *args)
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and expected in lines[0]
    assert not (tiny_run.root / "variants").exists() or not any((tiny_run.root / "variants").iterdir())


def test_cli_config_file_errors_and_success(tiny_run, monkeypatch, capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("- name: a\n  method: rtn\n  groupsize: 32\n")
    code, _, err = _cli(monkeypatch, capsys, "--run-dir", str(tiny_run.root), "--config", str(bad))
    assert code == 2 and "variant #1 (a): groupsize: Extra inputs are not permitted" in err

    good = tmp_path / "variants.yaml"
    good.write_text("variants:\n  - name: w4\n    method: rtn\n    group_size: auto\n    overrides:\n      - pattern: 'layers\\.1\\.'\n")
    code, out, err = _cli(monkeypatch, capsys, "--run-dir", str(tiny_run.root), "--config", str(good))
    assert code == 0, err
    assert out.strip() == str(tiny_run.root / "variants" / "w4")
    manifest = read_json(tiny_run.root / "variants" / "w4" / "manifest.json")
    assert manifest["group_size"] == 64 and manifest["details"]["plan"]["modules"]["bf16"][0].startswith("lm_head")


def test_cli_flags_apply_only_where_they_mean_something():
    from quantship.commands.quantize import _specs

    flags = {"group_size": "auto", "keep": ["lm_head"], "keep_8bit": None, "asymmetric": True, "act_order": True, "imatrix": True}
    specs = {s.name: s for s in _specs(["w4:gptq", "fp8:fp8-dynamic", "q8:gguf:Q8_0", "q4:gguf:Q4_K_M"], None, flags)}
    assert (specs["w4"].group_size, specs["w4"].symmetric, specs["w4"].act_order) == ("auto", False, True)
    assert (specs["fp8"].group_size, specs["fp8"].symmetric) == (None, True)
    assert (specs["q8"].imatrix, specs["q4"].imatrix) == (False, True)
    assert all(s.overrides[0].pattern == "lm_head" for s in specs.values())
