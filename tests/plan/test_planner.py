"""Plans for hand-computed cases: replicas with the KV cache counted, TP, ranking."""

from __future__ import annotations

import pytest

from quantship.errors import InputError
from quantship.formats.hardware import HardwareProfile, load_hardware
from quantship.formats.matrix import load_matrix
from quantship.plan.geometry import estimate_params
from quantship.plan.planner import Traffic, make_plan
from quantship.plan.sizing import tp_problem
from quantship.plan.variant import VariantInfo

GIB = 1 << 30
H100_BYTES = 81559 * (1 << 20)
CPU = HardwareProfile(
    id="cpu", name="test cpu", kind="cpu", memory_bytes=24 * GIB, arch="x86_64", bandwidth_gbs=10.0,
    cpu_flags=("avx2", "avx512f"),
)


def plan(geo, hardware="h100", context=2048, concurrency=4, **options):
    device = load_hardware(hardware) if isinstance(hardware, str) else hardware
    return make_plan(
        geo=geo, params=estimate_params(geo), hardware=device,
        traffic=Traffic(context=context, concurrency=concurrency), **options,
    )


def by_format(result, format_id):
    return next(c for c in result.candidates if c.format == format_id)


def test_13b_bf16_replicas_once_kv_is_counted(llama2_13b):
    # weights 26,031,728,640 + KV 819,200 x 2048 x 4 + activations + 1 GiB runtime/graphs
    need = 26_031_728_640 + 819_200 * 2048 * 4 + (8192 * 67_072 * 2 + 4 * 32000 * 12) + GIB
    bf16 = by_format(plan(llama2_13b, context=2048, concurrency=4), "bf16")
    assert bf16.fit.budget.total_bytes == need
    assert int(0.9 * H100_BYTES // need) == 2
    assert (bf16.fit.replicas_weights_only, bf16.fit.replicas_per_device) == (3, 2)
    assert bf16.fit.memory_utilization == 0.45 and need <= 0.45 * H100_BYTES

    busier = by_format(plan(llama2_13b, context=4096, concurrency=8), "bf16")
    assert (busier.fit.tensor_parallel, busier.fit.replicas_per_device) == (1, 1)


def test_13b_bf16_at_4096_x_32_needs_two_h100s(llama2_13b):
    result = plan(llama2_13b, context=4096, concurrency=32, format="bf16", devices=8)
    fit = result.chosen.fit
    assert fit.tensor_parallel == 2 and fit.replicas_total == 4
    assert "--tensor-parallel-size" in fit.settings.args
    assert fit.settings.args[fit.settings.args.index("--tensor-parallel-size") + 1] == "2"


def test_13b_int4_fits_four_replicas_where_bf16_fits_two(llama2_13b):
    result = plan(llama2_13b, context=2048, concurrency=4)
    assert by_format(result, "w4a16").fit.replicas_per_device == 4


def test_70b_needs_tp2_or_tp4_depending_on_traffic(llama3_70b):
    light = plan(llama3_70b, context=2048, concurrency=1, format="bf16", devices=8)
    heavy = plan(llama3_70b, context=4096, concurrency=32, format="bf16", devices=8)
    assert light.chosen.fit.tensor_parallel == 2
    assert heavy.chosen.fit.tensor_parallel == 4
    assert heavy.chosen.fit.replicas_total == 2


def test_70b_on_one_gpu_says_how_many_devices(llama3_70b):
    with pytest.raises(InputError, match="--devices 2"):
        plan(llama3_70b, context=4096, concurrency=32, devices=1)


def test_tp_must_divide_heads(configs):
    from quantship.plan.geometry import geometry_from_config

    qwen = geometry_from_config(configs["qwen2_0_5b"])  # 14 heads, 2 KV heads
    assert tp_problem(qwen, 2) is None
    assert "14 attention heads" in tp_problem(qwen, 4)


def test_gpu_order_depends_on_sm_and_concurrency(llama3_8b):
    assert plan(llama3_8b, "h100", concurrency=64).chosen.format == "w8a8-fp8"
    assert plan(llama3_8b, "h100", concurrency=1).chosen.format == "w4a16"
    assert plan(llama3_8b, "a100-80gb", concurrency=64).chosen.format == "w8a8-int8"
    b200 = plan(llama3_8b, "b200", concurrency=64)
    assert b200.chosen.format == "w8a8-fp8"
    assert by_format(b200, "w8a8-int8").status == "refused"


def test_cpu_choice_is_the_usable_format_with_the_highest_prior_and_says_it_is_a_prior(smollm2):
    priors = load_matrix().cpu_priors.tokens_per_s
    result = plan(smollm2, CPU, context=2048, concurrency=16)
    ok = [c for c in result.candidates if c.usable]
    fastest = max((c.format for c in ok if c.format in priors), key=priors.__getitem__)
    assert result.chosen.format == fastest and result.chosen.prior_tok_s == priors[fastest]
    assert all(c.measured_tok_s is None for c in result.candidates)  # nothing was measured
    order = [c.format for c in ok]
    unrated = [f for f in order if f not in priors]
    assert unrated and all(order.index(f) > order.index(fastest) for f in unrated)
    fp8 = by_format(result, "w8a8-fp8")
    order = [c.format for c in result.candidates]
    assert fp8.status == "slow" and order.index("w8a8-fp8") > order.index("gguf-q8_0")
    assert result.chosen.fit.settings.env == {"VLLM_CPU_KVCACHE_SPACE": "1"}


def test_measurements_rerank_the_plan(smollm2):
    result = plan(smollm2, CPU, concurrency=16, measured={"w4a16": 500.0, "bf16": 300.0}, measured_source="bench")
    assert result.chosen.format == "w4a16" and result.chosen.measured_tok_s == 500.0
    assert result.chosen.prior_tok_s is None  # measurements replace the priors, they do not mix
    assert result.ranking.basis == "measured" and result.ranking.order[:2] == ["w4a16", "bf16"]


def test_variant_brings_its_real_size_and_fixes_the_format(llama2_13b, tmp_path):
    variant = VariantInfo(path=tmp_path, format="w4a16", weights_bytes=7_500_000_000, files=[], detected_from="t")
    result = plan(llama2_13b, variant=variant)
    assert {c.format for c in result.candidates} == {"w4a16"}
    assert [(c.stack, c.status) for c in result.candidates][0] == ("vllm", "ok")
    assert result.chosen.weights_bytes == 7_500_000_000 and result.chosen.artifact == str(tmp_path)
    with pytest.raises(InputError, match="contradicts the variant"):
        plan(llama2_13b, variant=variant, format="bf16")


def test_explicit_refusals_raise_with_the_reason(llama2_13b):
    with pytest.raises(InputError, match="gguf-q4_k_m cannot be served with vllm.*--stack llama.cpp"):
        plan(llama2_13b, format="gguf-q4_k_m", stack="vllm")
    with pytest.raises(InputError, match="w4a16 cannot be served with llama.cpp.*GGUF files only"):
        plan(llama2_13b, format="w4a16", stack="llama.cpp")
    with pytest.raises(InputError, match="SM 8.9"):
        plan(llama2_13b, "a100-80gb", format="w8a8-fp8")


def test_context_beyond_the_model_is_refused(llama2_13b):
    with pytest.raises(InputError, match="max_position_embeddings 4096"):
        plan(llama2_13b, context=8192)


def test_fp8_kv_cache_flag_and_capacity(llama3_8b):
    auto = plan(llama3_8b, "l4", context=8192, concurrency=8, format="w4a16")
    fp8 = plan(llama3_8b, "l4", context=8192, concurrency=8, format="w4a16", kv_dtype="fp8")
    assert "--kv-cache-dtype" not in auto.chosen.fit.settings.args
    assert fp8.chosen.fit.settings.args[-2:] == ["--kv-cache-dtype", "fp8"]
    assert fp8.chosen.fit.kv_capacity_tokens > 1.9 * auto.chosen.fit.kv_capacity_tokens


def test_llamacpp_flags(smollm2):
    result = plan(smollm2, CPU, context=2048, concurrency=4, format="gguf-q4_k_m", kv_dtype="fp8")
    args = result.chosen.fit.settings.args
    assert args[:6] == ["--ctx-size", "8192", "--parallel", "4", "--n-gpu-layers", "0"]
    assert "q8_0" in args
