"""The format x stack x hardware matrix: refusals carry their reason."""

from __future__ import annotations

import pytest

from quantship.errors import InputError
from quantship.formats.hardware import HardwareProfile, load_hardware
from quantship.formats.matrix import Matrix, default_stack, load_matrix, resolve_format, resolve_stack, support

# An AVX-512 host, like the one the issue measured vLLM CPU on.
CPU = HardwareProfile(
    id="cpu", name="test cpu", kind="cpu", memory_bytes=32 << 30, arch="x86_64", cpu_flags=("avx2", "avx512f")
)
T4 = HardwareProfile(id="t4", name="T4", kind="gpu", memory_bytes=16 << 30, compute_capability=7.5)


def test_gguf_on_vllm_is_refused_with_the_stack_to_use():
    verdict = support("gguf-q4_k_m", "vllm", load_hardware("h100"))
    assert verdict.status == "refused" and "--stack llama.cpp" in verdict.reason


def test_gptq_on_llamacpp_is_refused_because_it_reads_gguf_only():
    verdict = support(resolve_format("gptq"), "llama.cpp", load_hardware("h100"))
    assert verdict.status == "refused" and "GGUF files only" in verdict.reason


@pytest.mark.parametrize(
    ("format_id", "hardware", "status"),
    [
        ("w8a8-fp8", "h100", "ok"),
        ("w8a8-fp8", "l4", "ok"),            # Ada, SM 8.9
        ("w8a8-fp8", "a100-80gb", "refused"),  # SM 8.0 < 8.9
        ("w8a8-fp8", "a10g", "refused"),
        ("w8a8-int8", "a100-40gb", "ok"),
        ("w8a8-int8", "h200", "ok"),
        ("w8a8-int8", "b200", "refused"),    # Blackwell: no CUTLASS int8
        ("w8a8-fp8", "b200", "ok"),
        ("w4a16", "a10g", "ok"),             # Marlin needs SM >= 8.0
    ],
)
def test_compute_capability_gates(format_id, hardware, status):
    assert support(format_id, "vllm", load_hardware(hardware)).status == status


def test_refusal_names_the_sm_of_the_card():
    reason = support("w8a8-fp8", "vllm", load_hardware("a100")).reason
    assert "SM 8.9" in reason and "SM 8.0" in reason
    assert "Blackwell" in support("w8a8-int8", "vllm", load_hardware("b200")).reason


def test_marlin_int4_refused_below_ampere():
    assert support("w4a16", "vllm", T4).status == "refused"
    assert support("w8a8-int8", "vllm", T4).status == "ok"


def test_x86_cpu_vllm_runs_w4a16_int8_bf16_only():
    statuses = {f: support(f, "vllm", CPU).status for f in load_matrix().formats}
    assert {f for f, s in statuses.items() if s == "ok"} == {"bf16", "w8a8-int8", "w4a16"}
    assert statuses["w8a8-fp8"] == "slow"


def test_arm_cpu_vllm_is_bf16_only():
    arm = CPU.model_copy(update={"arch": "aarch64"})
    assert support("w4a16", "vllm", arm).status == "refused"
    assert support("bf16", "vllm", arm).status == "ok"


def test_llamacpp_serves_gguf_on_cpu_and_gpu():
    for hardware in (CPU, load_hardware("l4")):
        assert support("gguf-q8_0", "llama.cpp", hardware).status == "ok"


def test_nf4_is_transformers_on_gpu_only():
    assert support("nf4", "transformers", load_hardware("a10g")).status == "ok"
    assert support("nf4", "transformers", CPU).status == "refused"


def test_every_cell_that_is_not_ok_has_a_reason():
    matrix = load_matrix()
    hardware = [CPU, T4, *(load_hardware(h) for h in ("h100", "a100", "b200", "l4", "a10g"))]
    for stack in matrix.stacks:
        for format_id in matrix.formats:
            for device in hardware:
                verdict = support(format_id, stack, device)
                assert verdict.status == "ok" or verdict.reason, (format_id, stack, device.id)


def test_aliases_and_unknown_names():
    assert resolve_format("INT4") == "w4a16"
    assert resolve_format("fp8") == "w8a8-fp8"
    assert resolve_format("Q4_K_M") == "gguf-q4_k_m"
    assert resolve_stack("llama.cpp") == resolve_stack("llamacpp") == resolve_stack("Llama-CPP") == "llama.cpp"
    with pytest.raises(InputError, match="unknown format 'int3'.*w4a16"):
        resolve_format("int3")
    with pytest.raises(InputError, match="unknown serving stack"):
        resolve_stack("tgi")


def test_w4a16_on_vllm_cpu_needs_avx512():
    avx2_only = CPU.model_copy(update={"cpu_flags": ("avx2",)})
    cell = support("w4a16", "vllm", avx2_only)
    assert cell.status == "refused" and "cpu_gemm_wna16" in cell.reason and "lacks avx512f" in cell.reason
    assert support("w8a8-int8", "vllm", avx2_only).status == "ok"


def test_every_cpu_prior_is_for_a_format_its_stack_runs_on_the_cpu_it_describes():
    priors = load_matrix().cpu_priors
    described = HardwareProfile(id="cpu", name="the priors' CPU", kind="cpu", memory_bytes=16 << 30, arch="x86_64",
                                cpu_flags=priors.cpu_flags)
    for format_id in priors.tokens_per_s:
        verdict = support(format_id, default_stack(format_id), described)
        assert verdict.status != "refused", (format_id, verdict.reason)


def test_a_prior_for_a_combination_the_matrix_refuses_does_not_load():
    raw = load_matrix().model_dump()
    raw["cpu_priors"]["tokens_per_s"]["w4a16"] = 260.0  # vLLM CPU's W4A16 kernel needs AVX-512; the priors' CPU is AVX2
    with pytest.raises(ValueError, match="w4a16, which vllm cannot run there .*lacks avx512f"):
        Matrix.model_validate(raw)
