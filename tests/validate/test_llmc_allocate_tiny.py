"""Per-tensor allocation of an llm-compressor variant on the tiny Llama: RTN candidates, a real build, the real gate."""

from __future__ import annotations

import pytest
from safetensors import safe_open

from quantship.progress import stderr_console
from quantship.quantize.spec import VariantSpec
from quantship.quantize.variants import run_quantize
from quantship.rundir import read_json
from quantship.stages.calibrate import CalibrationOptions, run_calibrate
from tests.support.recover_options import LOOSE, SMALL
from tests.support.validate_runs import run_cli


def _gated_rtn_w4(run, monkeypatch, capsys, tmp_path):
    """Calibrate, quantize `w4` (RTN W4A16 g32) and gate it loosely: (the variant, the CLI args, its KL mean)."""
    run_calibrate(read_json(run.root / "baseline" / "baseline.json")["checkpoint"]["path"], run,
                  CalibrationOptions(samples=8, seq_len=32), stderr_console())
    [made] = run_quantize(run, [VariantSpec(name="w4", method="rtn", scheme="W4A16", group_size=32)], stderr_console())
    assert made.ok, made.error
    thresholds = tmp_path / "gate.yaml"
    thresholds.write_text(LOOSE)
    common = ["--run-dir", str(run.root), "--variant", "w4", "--thresholds", str(thresholds), *SMALL, "--sensitivity-tokens", "64"]
    assert run_cli(monkeypatch, capsys, *common)[0] == 0
    return made, common, read_json(run.root / "validation" / "w4.json")["checks"]["kl_mean"]["value"]


def test_target_gate_on_an_rtn_variant_keeps_fused_layers_on_one_type_and_passes(validate_run, monkeypatch, capsys, tmp_path):
    run = validate_run
    made, common, kl = _gated_rtn_w4(run, monkeypatch, capsys, tmp_path)
    assert kl > 0

    code, out, err = run_cli(monkeypatch, capsys, *common, "--max-kl-mean", f"{kl * 0.5:.8f}", "--recover",
                             "--select", "smallest-passing")
    record = read_json(run.root / "validation" / "w4.allocation.json")
    assert record["backend"] == "compressed-tensors" and record["recovered"], (record["outcome"], err[-3000:])
    chosen = next(r for r in record["runs"] if r["variant"] == record["recovered"])
    types = chosen["types"]
    for block in range(2):  # vLLM fuses q/k/v and gate/up: one type each
        prefix = f"model.layers.{block}."
        assert len({types[prefix + f"self_attn.{p}_proj.weight"] for p in "qkv"}) == 1
        assert len({types[prefix + f"mlp.{p}_proj.weight"] for p in ("gate", "up")}) == 1
    # the written checkpoint holds what was chosen: int4 or int8 codes with their scales, or bf16
    folder = run.root / "variants" / record["recovered"]
    with safe_open(str(next(folder.glob("*.safetensors"))), framework="pt") as handle:
        keys = set(handle.keys())
        for name, type_ in types.items():
            module = name.removesuffix(".weight")
            if type_ == "bf16":
                assert name in keys and f"{module}.weight_scale" not in keys, name
                continue
            scale = handle.get_slice(f"{module}.weight_scale").get_shape()
            packed = handle.get_slice(f"{module}.weight_packed").get_shape()
            columns = handle.get_tensor(f"{module}.weight_shape").tolist()[1]
            bits, groups = (4, columns // int(type_.split("-g")[1])) if type_.startswith("W4A16-g") else (8, 1)
            assert type_ in ("W8A16",) or bits == 4, type_
            # int32-packed codes of `bits` each, and one scale per group (W8A16: per output channel)
            assert packed[1] == -(-columns * bits // 32) and scale[1] == groups, (name, type_, packed, scale)
    assert chosen["bits_per_weight"] == pytest.approx(chosen["predicted_bits_per_weight"], abs=1e-3)
    assert code == 0 and read_json(run.root / "validation" / "selected.json")["selected"] == record["recovered"]


def test_a_target_out_of_reach_within_the_size_cap_builds_the_closest_fails_and_names_the_gap(
        validate_run, monkeypatch, capsys, tmp_path):
    run = validate_run
    made, common, kl = _gated_rtn_w4(run, monkeypatch, capsys, tmp_path)
    cap = round(made.bits_per_weight + 0.3, 4)  # room for a few 8-bit layers, not for a KL a thousand times smaller

    code, out, err = run_cli(monkeypatch, capsys, *common, "--max-kl-mean", f"{kl * 1e-3:.10f}", "--recover",
                             "--target", "gate", "--max-bits-per-weight", str(cap))
    record = read_json(run.root / "validation" / "w4.allocation.json")
    assert record["gap"] is not None and record["recovered"] is None, record["outcome"]
    [closest] = record["runs"]  # the closest assignment within the cap, built and gated once
    assert not closest["passed"] and "kl_mean" in closest["failed_checks"]
    assert closest["bits_per_weight"] <= cap and closest["predicted_kl"] == pytest.approx(record["gap"]["closest_predicted_kl"])
    assert code == 1
    assert f"no assignment within {cap} bits/weight predicts KL" in out + err
