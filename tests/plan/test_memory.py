"""Memory budget against hand-computed figures, including the seed's 13B case."""

from __future__ import annotations

from quantship.formats.hardware import load_hardware
from quantship.formats.matrix import load_matrix
from quantship.plan.geometry import estimate_params
from quantship.plan.memory import GIB, budget, kv_bytes_per_token, weight_bytes
from quantship.plan.sizing import weights_only_replicas

FORMATS = load_matrix().formats


def test_13b_bf16_is_26_gb_and_3_replicas_on_80gb_ignoring_kv(llama2_13b):
    weights = weight_bytes(estimate_params(llama2_13b), FORMATS["bf16"])
    assert weights == 2 * 13_015_864_320  # 26.03 GB
    assert weights_only_replicas(load_hardware("h100"), weights) == 3


def test_13b_int4_is_about_7_gb(llama2_13b):
    params = estimate_params(llama2_13b)
    # 12,687,769,600 linear weights x (4 + 16/128) bits, embeddings + lm_head + norms in bf16
    expected = 12_687_769_600 * 4.125 / 8 + 328_094_720 * 2
    weights = weight_bytes(params, FORMATS["w4a16"])
    assert weights == expected == 7_198_320_640


def test_kv_per_token_llama2_13b_is_819200_bytes(llama2_13b):
    # 2 x 40 layers x 40 kv heads x 128 x 2 bytes
    assert kv_bytes_per_token(llama2_13b, 2) == 819_200


def test_kv_per_token_is_gqa_aware(llama3_8b, smollm2):
    assert kv_bytes_per_token(llama3_8b, 2) == 131_072  # 2 x 32 x 8 x 128 x 2
    assert kv_bytes_per_token(llama3_8b, 1) == 65_536   # fp8 KV cache
    assert kv_bytes_per_token(smollm2, 2) == 2 * 30 * 3 * 64 * 2


def test_kv_shards_over_tp_and_replicates_when_fewer_heads(llama3_8b):
    assert kv_bytes_per_token(llama3_8b, 2, tp=2) == 131_072 // 2
    assert kv_bytes_per_token(llama3_8b, 2, tp=8) == 131_072 // 8
    # 8 KV heads over tp=16 would replicate: each device still holds one head
    assert kv_bytes_per_token(llama3_8b, 2, tp=16) == 131_072 // 8


def _budget(geo, format_id, context, concurrency, kv="auto", stack="vllm", tp=1, hardware="h100"):
    params = estimate_params(geo)
    device = load_hardware(hardware)
    return budget(
        geo=geo, fmt=FORMATS[format_id], stack=stack, device_kind=device.kind,
        device_memory_bytes=device.memory_bytes, weights_total=weight_bytes(params, FORMATS[format_id]),
        weights_source="test", context=context, concurrency=concurrency, kv_dtype=kv, tp=tp,
    )


def test_budget_of_13b_bf16_for_4096_x_32_by_hand(llama2_13b):
    b = _budget(llama2_13b, "bf16", 4096, 32)
    assert b.kv_bytes == 819_200 * 4096 * 32  # 107.4 GB: more than the weights
    # activations: 8192 batched tokens x (3*13824 + 120*128 + 2*5120) x 2 bytes
    # + 32 sequences x 32000 vocab x 4 bytes x 3 sampler copies
    assert b.activation_bytes == 8192 * 67_072 * 2 + 32 * 32000 * 12
    assert b.cuda_graph_bytes == GIB // 2 and b.runtime_bytes == GIB // 2
    assert b.total_bytes == 26_031_728_640 + b.kv_bytes + b.activation_bytes + GIB


def test_fp8_kv_halves_kv_and_llamacpp_uses_q8_0(llama2_13b):
    full = _budget(llama2_13b, "bf16", 4096, 8)
    fp8 = _budget(llama2_13b, "bf16", 4096, 8, kv="fp8")
    assert fp8.kv_bytes * 2 == full.kv_bytes and fp8.kv_dtype == "fp8"
    q8 = _budget(llama2_13b, "gguf-q8_0", 4096, 8, kv="fp8", stack="llama.cpp")
    assert q8.kv_dtype == "q8_0" and q8.kv_bytes_per_token == 2 * 40 * 40 * 128 * 34 // 32


def test_tp_shards_weights(llama3_70b):
    one, two = _budget(llama3_70b, "bf16", 2048, 1), _budget(llama3_70b, "bf16", 2048, 1, tp=2)
    assert two.weights_bytes * 2 == one.weights_bytes
    assert two.runtime_bytes == one.runtime_bytes + GIB // 2  # NCCL buffers
