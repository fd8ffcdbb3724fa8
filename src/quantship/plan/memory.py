"""Memory budget of one replica: weights + KV cache + activations + runtime overhead.

KV cache per token = 2 (K and V) x layers x kv_heads x head_dim x bytes per element,
so grouped-query attention (kv_heads < heads) shrinks it by heads / kv_heads. The
overhead constants below are the ones vLLM's own start-up profile reports; they are
estimates, stated so a reader can disagree with a number rather than a guess.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, computed_field

from quantship.formats.matrix import FormatSpec
from quantship.plan.geometry import ModelGeometry, ParamCount

GIB = 1 << 30

# CUDA context, cuBLAS/cuBLASLt workspaces and allocator slack that torch does not
# count; vLLM logs "non_torch_memory takes 0.15-0.4 GiB" on one GPU.
NON_TORCH_GPU_BYTES = GIB // 2
# NCCL buffers each GPU holds once tensor parallelism is on.
NCCL_BYTES = GIB // 2
# CUDA graphs captured for decode batch sizes; vLLM logs "Graph capturing finished,
# took 0.13-0.5 GiB" / "Estimated CUDA graph memory: 0.26-0.36 GiB". Zero in eager mode.
CUDA_GRAPH_BYTES = GIB // 2
# A CPU serving process: Python, torch and the server's own resident memory.
CPU_RUNTIME_BYTES = 3 * GIB // 2
# vLLM's default --max-num-batched-tokens for `vllm serve` (chunked prefill): 8192 on
# GPUs with >= 70 GiB, 2048 below. The activation peak scales with it.
BATCHED_TOKENS_LARGE_GPU = 8192
BATCHED_TOKENS_DEFAULT = 2048
# llama.cpp's default physical batch (--ubatch-size).
LLAMACPP_UBATCH = 512
# Sampler buffers per sequence: logits, probabilities and log-probabilities in fp32.
SAMPLER_COPIES = 3

KvDtype = Literal["auto", "fp8"]


class Budget(BaseModel):
    """Bytes one replica needs on each device it spans (tensor-parallel shard)."""

    tensor_parallel: int
    weights_bytes: int
    weights_source: str
    kv_dtype: str
    kv_bytes_per_token: int
    kv_tokens: int
    kv_bytes: int
    activation_bytes: int
    cuda_graph_bytes: int
    runtime_bytes: int

    @computed_field
    @property
    def overhead_bytes(self) -> int:
        return self.activation_bytes + self.cuda_graph_bytes + self.runtime_bytes

    @computed_field
    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.kv_bytes + self.overhead_bytes


def weight_bytes(params: ParamCount, fmt: FormatSpec) -> int:
    """Weight bytes of the whole model in `fmt`, from its parameter count."""
    if fmt.quantized == "none":
        return params.total * 2
    if fmt.quantized == "all":
        return math.ceil(params.total * fmt.weight_bits / 8)
    return math.ceil(params.linear * fmt.weight_bits / 8) + params.other * 2


def kv_element_bytes(geo: ModelGeometry, kv_dtype: KvDtype, stack: str) -> float:
    """Bytes per cached K or V element: the model dtype, or 8-bit when asked.

    llama.cpp's 8-bit cache is q8_0 (34 bytes per block of 32); vLLM's is fp8.
    """
    if kv_dtype == "fp8":
        return 34 / 32 if stack == "llama.cpp" else 1.0
    return 2.0 if stack == "llama.cpp" else float(geo.dtype_bytes)


def kv_bytes_per_token(geo: ModelGeometry, element_bytes: float, tp: int = 1) -> int:
    """KV bytes per token on one device; KV heads shard over tp, or replicate when fewer."""
    heads_per_device = max(1, geo.kv_heads // tp)
    return math.ceil(2 * geo.layers * heads_per_device * geo.head_dim * element_bytes)


def activation_bytes(geo: ModelGeometry, batched_tokens: int, sequences: int, element_bytes: int) -> int:
    """Peak of a forward pass over `batched_tokens` tokens, plus the sampler's logits.

    Per token the largest live tensors are the MLP's fused gate/up output (2 x I), its
    activation (I), the QKV output and two hidden-size buffers (residual, output).
    """
    per_token = 3 * geo.intermediate + (geo.heads + 2 * geo.kv_heads) * geo.head_dim + 2 * geo.hidden
    logits = sequences * geo.vocab * 4 * SAMPLER_COPIES
    return batched_tokens * per_token * element_bytes + logits


def budget(
    *,
    geo: ModelGeometry,
    fmt: FormatSpec,
    stack: str,
    device_kind: str,
    device_memory_bytes: int,
    weights_total: int,
    weights_source: str,
    context: int,
    concurrency: int,
    kv_dtype: KvDtype,
    tp: int = 1,
) -> Budget:
    """The per-device budget of one replica serving `concurrency` x `context` tokens."""
    element = kv_element_bytes(geo, kv_dtype, stack)
    per_token = kv_bytes_per_token(geo, element, tp)
    tokens = context * concurrency
    on_gpu = device_kind == "gpu"
    if stack == "vllm":
        batched = BATCHED_TOKENS_LARGE_GPU if on_gpu and device_memory_bytes >= 70 * GIB else BATCHED_TOKENS_DEFAULT
        activations = activation_bytes(geo, batched, concurrency, 2)
        graphs = CUDA_GRAPH_BYTES if on_gpu else 0
    elif stack == "llama.cpp":
        activations = activation_bytes(geo, LLAMACPP_UBATCH, 1, 4)
        graphs = 0
    else:  # transformers generate(): the whole batch's prompts in one prefill
        activations = activation_bytes(geo, tokens, concurrency, 2)
        graphs = 0
    if on_gpu:
        runtime = NON_TORCH_GPU_BYTES + (NCCL_BYTES if tp > 1 else 0)
    else:
        runtime = CPU_RUNTIME_BYTES
    return Budget(
        tensor_parallel=tp,
        weights_bytes=math.ceil(weights_total / tp),
        weights_source=weights_source,
        kv_dtype=_kv_label(kv_dtype, stack, geo),
        kv_bytes_per_token=per_token,
        kv_tokens=tokens,
        kv_bytes=per_token * tokens,
        activation_bytes=activations,
        cuda_graph_bytes=graphs,
        runtime_bytes=runtime,
    )


def _kv_label(kv_dtype: KvDtype, stack: str, geo: ModelGeometry) -> str:
    if kv_dtype == "fp8":
        return "q8_0" if stack == "llama.cpp" else "fp8"
    return "f16" if stack == "llama.cpp" else geo.dtype
