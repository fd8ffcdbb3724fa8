"""`plan --measure`'s choice of what to serve: real run directories, manifests and files on disk.

Nothing is served here (tests/plan/test_measure_e2e.py does that); these check which
artifact maps to which matrix format and stack, and why the others are left out.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from quantship.errors import InputError
from quantship.formats.hardware import HardwareProfile
from quantship.plan.measure import FormatMeasurement, MeasureReport, MeasureSettings, NotMeasured, load_measurements
from quantship.rundir import RunDir
from quantship.stages.measure import check_this_machine, select
from tests.support.serve_files import write_gguf

AVX2 = HardwareProfile(id="cpu", name="test AVX2 CPU", kind="cpu", memory_bytes=16 << 30, cpu_flags=("avx2",))
AVX512 = AVX2.model_copy(update={"name": "test AVX-512 CPU", "cpu_flags": ("avx2", "avx512f")})
H100 = HardwareProfile(id="h100", name="H100", kind="gpu", memory_bytes=80 << 30, compute_capability=9.0)


def _ct(bits: int, activations: dict | None, group_size: int | None = 128) -> dict:
    return {
        "quant_method": "compressed-tensors",
        "config_groups": {"group_0": {
            "weights": {"num_bits": bits, "type": "int", "group_size": group_size},
            "input_activations": activations,
        }},
    }


W4A16 = _ct(4, None)
W8A16 = _ct(8, None)
W8A8 = _ct(8, {"num_bits": 8, "type": "int", "dynamic": True}, None)


def checkpoint(folder: Path, quant: dict | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama"}
    if quant:
        config["quantization_config"] = quant
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "model.safetensors").write_bytes(b"\0" * 256)
    return folder


def variant(run: Path, name: str, *, quant: dict | None = None, gguf: str | None = None, scheme: str = "") -> None:
    """A variant published as `quantship quantize` publishes it: files, manifest with format and scheme."""
    with RunDir(run).stage(f"variants/{name}", {"name": name}, {}) as stage:
        if gguf:
            write_gguf(stage.path(f"model.{gguf}.gguf"), gguf)
            stage.extra.update(scheme=gguf)
        else:
            checkpoint(stage.staging, quant)
            stage.extra.update(scheme=scheme)


@pytest.fixture
def model(tmp_path) -> Path:
    return checkpoint(tmp_path / "model")


@pytest.fixture
def run(tmp_path, model) -> Path:
    run = tmp_path / "run"
    variant(run, "q8", gguf="Q8_0")
    variant(run, "q2k", gguf="Q2_K")
    variant(run, "int8", quant=W8A8, scheme="W8A8")
    variant(run, "w4", quant=W4A16, scheme="W4A16")
    variant(run, "w8", quant=W8A16, scheme="W8A16")
    return run


@pytest.fixture
def no_envs(tmp_path, monkeypatch):
    """A QUANTSHIP_HOME without environments: the vLLM CPU env is not set up there."""
    monkeypatch.setenv("QUANTSHIP_HOME", str(tmp_path / "empty-home"))
    monkeypatch.delenv("QUANTSHIP_CACHE", raising=False)


@pytest.fixture
def envs_ready(monkeypatch):
    """Every serving environment set up: build_spec, the check that finds them, accepts every target."""
    monkeypatch.setattr("quantship.stages.measure.build_spec", lambda *args, **kwargs: None)


def by_name(picks) -> dict:
    return {p.name: p for p in picks}


def test_each_artifact_maps_to_its_matrix_format_and_stack(run, model, envs_ready):
    picks = by_name(select(run, model, AVX512))
    assert [p.name for p in select(run, model, AVX512)] == ["checkpoint", "int8", "q2k", "q8", "w4", "w8"]
    assert (picks["checkpoint"].format, picks["checkpoint"].variant) == ("bf16", None)
    assert picks["checkpoint"].artifact == model.absolute()
    assert {n: picks[n].format for n in ("int8", "q8", "w4")} == {
        "int8": "w8a8-int8", "q8": "gguf-q8_0", "w4": "w4a16"}
    stacks = {"checkpoint": "vllm-cpu", "int8": "vllm-cpu", "w4": "vllm-cpu", "q8": "llama.cpp"}
    assert {name: (picks[name].stack, picks[name].skip) for name in stacks} == {n: (s, None) for n, s in stacks.items()}


def test_formats_outside_the_matrix_and_refused_cells_are_skipped_with_the_reason(run, model):
    picks = by_name(select(run, model, AVX2))
    assert picks["w8"].format is None and picks["w8"].skip == "compressed-tensors W8A16 is not a format of the plan's matrix"
    assert picks["q2k"].format is None and "Q2_K is not a format" in picks["q2k"].skip
    assert "w4a16" in picks["q2k"].fix  # names the formats it measures
    # vLLM CPU's W4A16 kernel exists only in its AVX-512 build: refused on this CPU, kept on AVX-512.
    assert picks["w4"].format == "w4a16" and "this CPU lacks avx512f" in picks["w4"].skip
    assert "avx512f" not in (by_name(select(run, model, AVX512))["w4"].skip or "")


def test_a_missing_vllm_cpu_env_is_a_skip_naming_the_setup_command(run, model, no_envs):
    picks = by_name(select(run, model, AVX2))
    for name in ("checkpoint", "int8"):
        assert picks[name].stack == "vllm-cpu"
        assert "vLLM CPU environment is not set up" in picks[name].skip
        assert picks[name].fix.startswith("run `quantship setup vllm-cpu`")


def test_one_artifact_per_format_is_measured(run, model, envs_ready):
    variant(run, "another-q8", gguf="Q8_0")
    picks = by_name(select(run, model, AVX2))
    # variants are taken by name: another-q8 sorts first and is measured, q8 is not
    assert picks["q8"].skip == "gguf-q8_0 is already measured with another-q8"
    assert picks["another-q8"].skip is None and picks["another-q8"].stack == "llama.cpp"


def test_quantized_model_contributes_no_bf16_candidate(run, tmp_path):
    quantized = checkpoint(tmp_path / "quantized-model", W4A16)
    assert "checkpoint" not in by_name(select(run, quantized, AVX2))


def test_run_without_variants_is_one_input_error_naming_quantize(tmp_path, model):
    with pytest.raises(InputError, match="has none") as error:
        select(tmp_path / "empty-run", model, AVX2)
    assert "quantship quantize --run-dir" in error.value.fix


def test_variants_of_another_model_are_refused(run, model, tmp_path):
    other = checkpoint(tmp_path / "other-model")
    with RunDir(run).stage("baseline", {}, {}) as stage:
        stage.path("baseline.json").write_text(json.dumps({"checkpoint": {"path": str(other)}}))
    with pytest.raises(InputError, match="were made from") as error:
        select(run, model, AVX2)
    assert f"--model {other}" in error.value.fix
    assert select(run, other, AVX2)[0].name == "checkpoint"


def test_gpu_profile_on_a_machine_without_gpu_is_refused():
    with pytest.raises(InputError, match="has no GPU"):
        check_this_machine(H100, gpu=None)
    check_this_machine(AVX2, gpu=None)
    check_this_machine(H100, gpu={"name": "NVIDIA H100"})


def test_measurements_json_is_itself_a_measurements_file(tmp_path):
    report = MeasureReport(
        source="plan --measure on test CPU", tokens_per_s={"bf16": 300.5, "gguf-q8_0": 120.0}, hardware="test CPU",
        settings=MeasureSettings(), not_measured=[NotMeasured(name="w8", format=None, reason="not in matrix")],
        measured=[FormatMeasurement(
            format="bf16", stack="vllm-cpu", variant=None, artifact="/m", tokens_per_s=300.5, requests=32, ok=32,
            output_tokens=2048, tpot_p50_ms=40.0, ttft_p50_ms=200.0, ready_after_s=20.0, verdict="skipped",
            bench_summary="/r/bench/measure-bf16/summary.json",
        )],
    )
    path = tmp_path / "measurements.json"
    path.write_text(report.model_dump_json())
    loaded = load_measurements(path)
    assert loaded.tokens_per_s == {"bf16": 300.5, "gguf-q8_0": 120.0} and loaded.source == report.source
    assert MeasureSettings().warmup == 16 and (MeasureSettings().max_tokens, MeasureSettings().requests) == (64, 32)


def quantship(*args, cwd):
    return subprocess.run(
        [sys.executable, "-c", "from quantship.cli import main; main()", *args],
        cwd=cwd, capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"},
    )


@pytest.fixture
def smollm2_config(tmp_path, configs) -> Path:
    folder = tmp_path / "smollm2"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(configs["smollm2"]))
    return folder


def test_cli_measure_without_variants_is_one_line_exit_2(tmp_path, smollm2_config):
    model = smollm2_config
    run = quantship("plan", "--model", str(model), "--hardware", "cpu", "--bandwidth-gbs", "10", "--measure",
                    "--run-dir", "run", cwd=tmp_path)
    assert run.returncode == 2, run.stderr
    assert run.stderr.count("\n") == 1 and "quantship quantize --run-dir run" in run.stderr
    assert not (tmp_path / "run" / "plan").exists()


def test_cli_measure_and_measurements_are_exclusive(tmp_path, smollm2_config):
    model = smollm2_config
    (tmp_path / "m.json").write_text(json.dumps({"bf16": 1.0}))
    run = quantship("plan", "--model", str(model), "--hardware", "cpu", "--measure", "--measurements", "m.json",
                    "--run-dir", "run", cwd=tmp_path)
    assert run.returncode == 2 and "--measure and --measurements both given" in run.stderr
    assert run.stderr.count("\n") == 1
