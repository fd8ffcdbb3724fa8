"""From a per-replica budget to a deployment: tensor parallelism, replicas, flags.

Tensor parallelism is the smallest power of two whose shard fits, with the
attention heads divisible by it (vLLM's rule; KV heads shard, or replicate when
there are fewer than tp). Replicas per device are whole vLLM processes sharing one
GPU, each with its own --gpu-memory-utilization slice.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from pydantic import BaseModel

from quantship.formats.hardware import HardwareProfile
from quantship.plan.geometry import ModelGeometry
from quantship.plan.memory import BATCHED_TOKENS_DEFAULT, BATCHED_TOKENS_LARGE_GPU, GIB, Budget

TP_SIZES = (1, 2, 4, 8)


class ServeSettings(BaseModel):
    """The command-line arguments and environment the serving stack should get."""

    stack: str
    args: list[str]
    env: dict[str, str] = {}


class Fit(BaseModel):
    """How one format deploys on the hardware, or why it does not."""

    fits: bool
    reason: str | None = None
    tensor_parallel: int
    replicas_per_device: int
    replicas_total: int
    replicas_weights_only: int
    memory_utilization: float
    kv_capacity_tokens: int
    max_full_context_seqs: int
    budget: Budget
    settings: ServeSettings | None = None


def tp_problem(geo: ModelGeometry, tp: int) -> str | None:
    """Why `tp` cannot shard this model, or None when it can."""
    if geo.heads % tp:
        return f"{geo.heads} attention heads do not divide by tensor-parallel size {tp}"
    if geo.kv_heads >= tp and geo.kv_heads % tp:
        return f"{geo.kv_heads} KV heads do not divide by tensor-parallel size {tp}"
    if geo.kv_heads < tp and tp % geo.kv_heads:
        return f"tensor-parallel size {tp} is not a multiple of {geo.kv_heads} KV heads"
    return None


def weights_only_replicas(hardware: HardwareProfile, weights_total: int) -> int:
    """The naive count: the card's nominal size over the weights, KV cache ignored."""
    size = hardware.nominal_gb * 1e9 if hardware.nominal_gb else hardware.memory_bytes
    return int(size // weights_total) if weights_total else 0


def fit(
    make_budget: Callable[[int], Budget],
    *,
    geo: ModelGeometry,
    hardware: HardwareProfile,
    stack: str,
    context: int,
    concurrency: int,
    devices: int,
    max_utilization: float,
    weights_total: int,
) -> Fit:
    """Smallest tensor-parallel size that fits, then how many replicas share a device."""
    usable = hardware.memory_bytes * max_utilization
    # Only vLLM is planned with tensor parallelism; llama.cpp and transformers get one device.
    sizes = TP_SIZES if hardware.kind == "gpu" and stack == "vllm" else (1,)
    problems = []
    for tp in sizes:
        if problem := tp_problem(geo, tp):
            problems.append(problem)
            continue
        need = make_budget(tp)
        if need.total_bytes <= usable:
            return _deploy(need, geo, hardware, stack, context, concurrency, devices, max_utilization, weights_total)
        problems.append(f"tp={tp} needs {need.total_bytes / GIB:.1f} GiB per device")
    last = make_budget(1)
    where = f"{sizes[-1]} x {hardware.name}" if len(sizes) > 1 else f"one {hardware.name}"
    return Fit(
        fits=False,
        reason=(
            f"does not fit {where} at {max_utilization:.2f} utilization "
            f"({usable / GIB:.1f} GiB usable; {problems[-1]})"
        ),
        tensor_parallel=0,
        replicas_per_device=0,
        replicas_total=0,
        replicas_weights_only=weights_only_replicas(hardware, weights_total),
        memory_utilization=0.0,
        kv_capacity_tokens=0,
        max_full_context_seqs=0,
        budget=last,
    )


def _deploy(
    need: Budget,
    geo: ModelGeometry,
    hardware: HardwareProfile,
    stack: str,
    context: int,
    concurrency: int,
    devices: int,
    max_utilization: float,
    weights_total: int,
) -> Fit:
    tp = need.tensor_parallel
    per_device = int(hardware.memory_bytes * max_utilization // need.total_bytes) if tp == 1 else 1
    if hardware.kind == "cpu":
        per_device = 1  # replicas on one host share its cores and memory bandwidth: no gain
    utilization = max_utilization
    while per_device > 1:
        utilization = math.floor(max_utilization / per_device * 100) / 100
        if need.total_bytes <= utilization * hardware.memory_bytes:
            break
        per_device -= 1
    if per_device == 1:
        utilization = max_utilization
    capacity = kv_capacity_tokens(stack, hardware, need, utilization)
    fits_devices = tp <= devices
    return Fit(
        fits=fits_devices,
        reason=None if fits_devices else f"needs tensor-parallel size {tp} but --devices is {devices}",
        tensor_parallel=tp,
        replicas_per_device=per_device,
        replicas_total=(devices // tp) * per_device,
        replicas_weights_only=weights_only_replicas(hardware, weights_total),
        memory_utilization=round(utilization, 2),
        kv_capacity_tokens=capacity,
        max_full_context_seqs=capacity // context,
        budget=need,
        settings=serve_settings(stack, hardware, need, context, concurrency, utilization),
    )


def kv_capacity_tokens(stack: str, hardware: HardwareProfile, need: Budget, utilization: float) -> int:
    """Tokens the server's KV cache will hold: vLLM on GPU takes what its slice leaves."""
    if stack == "vllm" and hardware.kind == "gpu":
        pool = utilization * hardware.memory_bytes - need.weights_bytes - need.overhead_bytes
        return int(pool // need.kv_bytes_per_token)
    if stack == "vllm":
        return cpu_kv_space_gib(need) * GIB // need.kv_bytes_per_token
    return need.kv_tokens


def cpu_kv_space_gib(need: Budget) -> int:
    """VLLM_CPU_KVCACHE_SPACE: whole GiB, rounded up from the budgeted KV bytes."""
    return max(1, math.ceil(need.kv_bytes / GIB))


def serve_settings(
    stack: str, hardware: HardwareProfile, need: Budget, context: int, concurrency: int, utilization: float
) -> ServeSettings:
    """The flags that make the server hold exactly what the budget counted."""
    fp8_kv = need.kv_dtype in {"fp8", "q8_0"}
    if stack == "vllm":
        args = ["--max-model-len", str(context), "--max-num-seqs", str(concurrency)]
        env = {}
        if hardware.kind == "gpu":
            batched = BATCHED_TOKENS_LARGE_GPU if hardware.memory_bytes >= 70 * GIB else BATCHED_TOKENS_DEFAULT
            args += ["--gpu-memory-utilization", f"{utilization:.2f}", "--max-num-batched-tokens", str(batched)]
            if need.tensor_parallel > 1:
                args += ["--tensor-parallel-size", str(need.tensor_parallel)]
        else:
            args += ["--dtype", "bfloat16"]
            env["VLLM_CPU_KVCACHE_SPACE"] = str(cpu_kv_space_gib(need))
        if fp8_kv:
            args += ["--kv-cache-dtype", "fp8"]
        return ServeSettings(stack=stack, args=args, env=env)
    if stack == "llama.cpp":
        args = [
            "--ctx-size", str(context * concurrency),
            "--parallel", str(concurrency),
            "--n-gpu-layers", "999" if hardware.kind == "gpu" else "0",
        ]
        if fp8_kv:
            args += ["--cache-type-k", "q8_0", "--cache-type-v", "q8_0", "--flash-attn", "on"]
        return ServeSettings(stack=stack, args=args)
    return ServeSettings(stack=stack, args=[])
