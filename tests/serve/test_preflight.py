"""Pre-flight refusals: each names what is wrong and how to fix it."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

from quantship.errors import InputError
from quantship.serve import preflight
from quantship.serve.launch import ServeOptions
from quantship.serve.server import build_spec, run_preflight
from quantship.serve.target import from_model_path, from_variant
from tests.support.serve_files import W4A16, W8A8_INT8, make_variant, write_checkpoint


def test_variant_without_verdict_is_refused_unless_forced(run_dir):
    make_variant(run_dir, "w4", verdict=None)
    target = from_variant(run_dir, "w4")
    check = preflight.verdict(target, force=False)
    assert check.status == "failed" and "no verdict" in check.detail and "--force" in check.fix
    forced = preflight.verdict(target, force=True)
    assert forced.status == "forced" and "--force" in forced.detail


def test_failed_and_passed_verdicts(run_dir):
    make_variant(run_dir, "bad", verdict=False)
    make_variant(run_dir, "good", verdict=True)
    assert preflight.verdict(from_variant(run_dir, "bad"), force=False).status == "failed"
    assert preflight.verdict(from_variant(run_dir, "good"), force=False).status == "ok"


def test_a_verdict_on_an_earlier_quantization_of_the_same_name_is_refused(run_dir):
    make_variant(run_dir, "w4")  # validated, passed
    verdict_path = run_dir / "validation" / "w4.json"
    old = json.loads(verdict_path.read_text())
    make_variant(run_dir, "w4", quant=W8A8_INT8, verdict=None, method="rtn")  # quantized again under that name
    verdict_path.write_text(json.dumps(old))
    check = preflight.verdict(from_variant(run_dir, "w4"), force=False)
    assert check.status == "failed" and "quantized again since" in check.detail and "quantship validate" in check.fix


def test_corrupt_verdict_file_counts_as_not_passed(run_dir):
    make_variant(run_dir, "w4")
    (run_dir / "validation" / "w4.json").write_text("[1, 2")
    assert preflight.verdict(from_variant(run_dir, "w4"), force=False).status == "failed"


def test_plain_checkpoint_needs_no_verdict_and_has_no_hashes(tmp_path):
    target = from_model_path(write_checkpoint(tmp_path / "m"))
    assert preflight.verdict(target, force=False).status == "skipped"
    assert preflight.hashes(target).status == "skipped"


def test_untouched_variant_matches_its_manifest(run_dir):
    make_variant(run_dir, "w4")
    check = preflight.hashes(from_variant(run_dir, "w4"))
    assert check.status == "ok" and "files match" in check.detail


def test_tampered_weight_file_is_refused_even_with_the_same_size_and_mtime(run_dir):
    folder = make_variant(run_dir, "w4")
    weights = folder / "model.safetensors"
    stat = weights.stat()
    data = bytearray(weights.read_bytes())
    data[10] ^= 0xFF
    weights.write_bytes(bytes(data))
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    check = preflight.hashes(from_variant(run_dir, "w4"))
    assert check.status == "failed" and "model.safetensors" in check.detail and "quantize" in check.fix


def test_missing_file_is_refused(run_dir):
    folder = make_variant(run_dir, "w4")
    target = from_variant(run_dir, "w4")
    (folder / "model.safetensors").unlink()
    check = preflight.hashes(target)
    assert check.status == "failed" and "missing" in check.detail


def test_format_and_stack_must_match(tmp_path, run_dir):
    make_variant(run_dir, "q4", gguf=True)
    gguf = from_variant(run_dir, "q4")
    assert "llama.cpp" in preflight.compatibility(gguf, "vllm-cpu", None).fix
    assert preflight.compatibility(gguf, "llama.cpp", None).status == "ok"
    safetensors = from_model_path(write_checkpoint(tmp_path / "m"))
    assert preflight.compatibility(safetensors, "llama.cpp", None).status == "failed"
    assert preflight.compatibility(safetensors, "vllm-cpu", None).status == "ok"


# config.json's quantization_config as the NF4 backend's transformers BitsAndBytesConfig writes it
NF4 = {"quant_method": "bitsandbytes", "load_in_4bit": True, "bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": False}
H100 = {"name": "H100", "memory_bytes": 80 << 30, "free_bytes": 80 << 30, "compute_capability": 9.0}


def test_nf4_variant_is_refused_on_cpu_by_the_matrix_with_its_reason(run_dir, tmp_path):
    make_variant(run_dir, "nf4", quant=NF4)
    target = from_variant(run_dir, "nf4")
    assert target.artifact.format == "nf4"
    with pytest.raises(InputError, match="nf4 on vllm-cpu .*x86 vLLM has no bitsandbytes kernels"):
        run_preflight(target, "vllm-cpu", ServeOptions(port=0), False, tmp_path / "serve", None)


def test_nf4_variant_serves_on_a_gpu_through_vllm_bitsandbytes(run_dir):
    make_variant(run_dir, "nf4", quant=NF4)
    target = from_variant(run_dir, "nf4")
    check = preflight.compatibility(target, "vllm", H100)
    assert check.status == "ok" and "slow" in check.detail and "Marlin" in check.detail
    spec = build_spec(target, "vllm", ServeOptions(), run_dir, vllm_python=Path("python3"))
    assert spec.argv[spec.argv.index("--quantization") + 1] == "bitsandbytes"


def test_int8_on_cpu_is_ok_and_on_old_gpu_refused(tmp_path):
    int8 = from_model_path(write_checkpoint(tmp_path / "i8", W8A8_INT8))
    assert preflight.compatibility(int8, "vllm-cpu", None).status == "ok"
    blackwell = {"name": "B200", "memory_bytes": 180 << 30, "free_bytes": 180 << 30, "compute_capability": 10.0}
    assert preflight.compatibility(int8, "vllm", blackwell).status == "failed"


def test_weights_larger_than_memory_are_refused(tmp_path):
    folder = write_checkpoint(tmp_path / "huge")
    with open(folder / "model.safetensors", "r+b") as handle:
        handle.truncate(1 << 42)  # sparse: 4 TiB on paper, nothing on disk
    check = preflight.memory(from_model_path(folder), "vllm-cpu", ServeOptions(kv_cache_gib=1), None)
    assert check.status == "failed" and "kv-cache" in check.fix
    small = from_model_path(write_checkpoint(tmp_path / "small"))
    assert preflight.memory(small, "vllm-cpu", ServeOptions(kv_cache_gib=1), None).status == "ok"


def test_gpu_memory_is_split_over_tensor_parallel(tmp_path):
    folder = write_checkpoint(tmp_path / "m")
    with open(folder / "model.safetensors", "r+b") as handle:
        handle.truncate(30 << 30)
    gpu = {"name": "L4", "memory_bytes": 24 << 30, "free_bytes": 20 << 30, "compute_capability": 8.9}
    target = from_model_path(folder)
    assert preflight.memory(target, "vllm", ServeOptions(tensor_parallel=1), gpu).status == "failed"
    assert preflight.memory(target, "vllm", ServeOptions(tensor_parallel=2), gpu).status == "ok"


def test_busy_port_is_refused():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        check = preflight.port("127.0.0.1", port)
    assert check.status == "failed" and "--port" in check.fix
    assert preflight.port("127.0.0.1", port).status == "ok"


def test_raise_on_failure_gives_one_line_with_fix(run_dir):
    make_variant(run_dir, "w4", verdict=None)
    checks = [preflight.verdict(from_variant(run_dir, "w4"), force=False)]
    with pytest.raises(InputError) as caught:
        preflight.raise_on_failure(checks)
    line = caught.value.one_line()
    assert line.startswith("pre-flight verdict: no verdict at") and "quantship validate" in line
    assert "\n" not in line


def test_w4a16_on_vllm_cpu_needs_avx512(tmp_path, monkeypatch):
    import quantship.formats.hardware as hardware

    w4 = from_model_path(write_checkpoint(tmp_path / "w4", W4A16))
    monkeypatch.setattr(hardware, "local_cpu_flags", lambda: ("avx2",))
    check = preflight.compatibility(w4, "vllm-cpu", None)
    assert check.status == "failed" and "cpu_gemm_wna16" in check.detail and "llama.cpp" in check.detail
    assert "lacks avx512f" in check.detail
    monkeypatch.setattr(hardware, "local_cpu_flags", lambda: ("avx2", "avx512f"))
    assert preflight.compatibility(w4, "vllm-cpu", None).status == "ok"


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    from quantship.formats.hardware import local_cpu_flags

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f\n")
    assert local_cpu_flags(info) == ("avx2", "avx512f")
    assert local_cpu_flags(tmp_path / "absent") == ()
