"""One pod per replica, sized by the planner, and the check that the pods fit the nodes.

Each model is re-judged with `quantship.plan.planner.make_plan` on the plan's own
geometry, hardware and traffic, with the artifact's real file size and as many devices
as one node has, so tensor parallelism, the memory budget and the server flags are the
planner's. Kubernetes gives a GPU to one pod (no time-slicing assumed), so a replica
gets the whole device: the flags are rebuilt at the plan's full memory utilization.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from quantship.deploy.config import Nodes
from quantship.errors import InputError
from quantship.plan.memory import CPU_RUNTIME_BYTES, GIB
from quantship.plan.planner import Candidate, Plan, make_plan
from quantship.plan.sizing import ServeSettings, cpu_kv_space_gib, serve_settings
from quantship.plan.variant import VariantInfo, inspect_variant
from quantship.serve.stacks import for_engine
from quantship.serve.target import ServeTarget

# Any GGUF matrix entry budgets a GGUF file the same way once its real size is known.
GGUF_FAMILY = "gguf-q8_0"


@dataclass(frozen=True)
class PodSize:
    """What one replica (one pod) of a model gets."""

    format: str
    stack: str  # serve's stack name: vllm | vllm-cpu | llama.cpp
    candidate: Candidate
    settings: ServeSettings
    devices: int  # GPUs per pod (tensor parallel), 0 on CPU
    memory_bytes: int  # host memory request = limit
    cpus: int
    note: str = ""

    @property
    def tensor_parallel(self) -> int:
        return self.candidate.fit.tensor_parallel


def size_format(plan: Plan, format_id: str, nodes: Nodes, variant: VariantInfo | None = None) -> Candidate:
    """The planner's verdict for one format with one node's devices (raises InputError when nothing fits)."""
    devices = max(1, nodes.gpus_per_node) if plan.hardware.kind == "gpu" else 1
    judged = make_plan(
        geo=plan.model,
        params=plan.params,
        hardware=plan.hardware,
        traffic=plan.traffic,
        format=format_id,
        kv_dtype=plan.kv_cache_dtype,
        devices=devices,
        max_utilization=plan.max_memory_utilization,
        variant=variant,
    )
    return judged.chosen


def size_model(plan: Plan, target: ServeTarget, nodes: Nodes) -> PodSize:
    """The pod of one model: the planner's fit for its real files on one node."""
    if plan.hardware.kind == "gpu" and nodes.gpus_per_node == 0:
        raise InputError(
            f"the plan is for {plan.hardware.name} GPUs but the declared nodes have none (nodes.gpus_per_node: 0)",
            "declare the GPU node pool, or re-plan with --hardware cpu",
        )
    info, note = _artifact_info(target)
    try:
        candidate = size_format(plan, info.format, nodes, info)
    except InputError as error:
        raise InputError(f"{target.name} ({info.format}) does not fit the declared nodes: {error.problem}",
                         "declare more GPUs per node (nodes.gpus_per_node) or a smaller variant") from None
    serving = for_engine(candidate.stack, plan.hardware.kind)
    if serving is None:
        raise InputError(f"{target.name}: {info.format} is served by {candidate.stack}, which quantship does not deploy",
                         "quantize a vLLM (w4a16, w8a8) or GGUF variant")
    stack = serving.id
    fit = candidate.fit
    gpu = plan.hardware.kind == "gpu"
    settings = serve_settings(candidate.stack, plan.hardware, fit.budget, plan.traffic.context,
                              plan.traffic.concurrency, plan.max_memory_utilization)
    tp = fit.tensor_parallel
    if gpu:  # the checkpoint passes through host memory once; each rank is a Python process
        memory = fit.budget.weights_bytes * tp + CPU_RUNTIME_BYTES * tp
        cpus = min(nodes.cpus, 4 * tp)
    elif stack == "vllm-cpu":  # vLLM CPU allocates VLLM_CPU_KVCACHE_SPACE whole GiB, not the budget's bytes
        budget = fit.budget
        memory, cpus = budget.weights_bytes + cpu_kv_space_gib(budget) * GIB + budget.overhead_bytes, nodes.cpus
    else:
        memory, cpus = fit.budget.total_bytes, nodes.cpus
    shown = info.format if not note else f"gguf-{str(target.artifact.gguf_type).lower()}"
    return PodSize(shown, stack, candidate, settings, tp if gpu else 0, memory, cpus, note)


def _artifact_info(target: ServeTarget) -> tuple[VariantInfo, str]:
    """Format and real weight bytes; a GGUF type outside the matrix is budgeted by its file size."""
    artifact = target.artifact
    if artifact.container == "gguf" and artifact.format is None:
        info = VariantInfo(path=artifact.folder, format=GGUF_FAMILY, weights_bytes=artifact.weights_bytes,
                           files=[artifact.path.name], detected_from="file size")
        return info, f"GGUF {artifact.gguf_type} is not a plan format: budgeted as GGUF with its real file size"
    return inspect_variant(target.path), ""


def check_placement(nodes: Nodes, pods: dict[str, tuple[PodSize, int]]) -> None:
    """Refuse, naming the shortfall, when the replicas cannot be placed on the declared nodes."""
    needed, detail = 0, []
    for name, (size, replicas) in pods.items():
        mem_gib = size.memory_bytes / GIB
        if mem_gib > nodes.memory_gib:
            raise InputError(
                f"one {name} replica needs {mem_gib:.1f} GiB of host memory but a node has {nodes.memory_gib:g} GiB",
                "declare nodes with more memory (nodes.memory_gib) or deploy a smaller variant",
            )
        per_node = [int(nodes.memory_gib // mem_gib) if mem_gib else replicas, nodes.cpus // max(1, size.cpus)]
        if size.devices:
            if size.devices > nodes.gpus_per_node:
                raise InputError(
                    f"one {name} replica needs {size.devices} GPUs (tensor parallel) but a node has {nodes.gpus_per_node}",
                    "declare nodes with more GPUs (nodes.gpus_per_node) or a smaller variant",
                )
            per_node.append(nodes.gpus_per_node // size.devices)
        fit = max(0, min(per_node))
        if fit == 0:
            raise InputError(f"no node can hold one {name} replica ({size.cpus} cores, {mem_gib:.1f} GiB)",
                             "declare larger nodes (nodes.cpus, nodes.memory_gib)")
        nodes_for = math.ceil(replicas / fit)
        needed += nodes_for
        detail.append(f"{name}: {replicas} x ({size.devices} GPU, {mem_gib:.1f} GiB), {fit} per node")
    if needed > nodes.count:
        raise InputError(
            f"the replicas need {needed} nodes but {nodes.count} are declared ({'; '.join(detail)})",
            "add nodes (nodes.count), lower the traffic target, or deploy a smaller variant",
        )
