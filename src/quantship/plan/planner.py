"""Compose matrix, geometry, memory budget, sizing and ranking into one plan.

Pure: everything it needs comes in as arguments (the geometry, parameter count,
hardware profile, an optional variant), so tests build hand-computed cases without
files, and the CLI owns reading the disk and writing plan.json.
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel, Field

from quantship.errors import InputError
from quantship.formats.hardware import HardwareProfile
from quantship.formats.matrix import STACKS, default_stack, load_matrix, support
from quantship.plan.geometry import ModelGeometry, ParamCount
from quantship.plan.memory import KvDtype, budget, weight_bytes
from quantship.plan.rank import Ranking, prior_ranking, rerank
from quantship.plan.sizing import Fit, fit
from quantship.plan.variant import VariantInfo

STATUS_ORDER = {"ok": 0, "slow": 1, "refused": 2}


class Traffic(BaseModel):
    context: int = Field(ge=1)
    concurrency: int = Field(ge=1)


class Candidate(BaseModel):
    """One (format, stack) pair judged on this hardware for this traffic."""

    format: str
    stack: str
    status: str
    reason: str | None = None
    weights_bytes: int | None = None
    weights_source: str | None = None
    fit: Fit | None = None
    decode_roofline_tok_s: float | None = None
    measured_tok_s: float | None = None   # decode tokens/s measured (plan --measure, --measurements)
    prior_tok_s: float | None = None      # decode tokens/s from the shipped priors, not a measurement
    artifact: str | None = None       # the folder/file holding this format, when one was given

    @property
    def usable(self) -> bool:
        return self.status == "ok" and self.fit is not None and self.fit.fits


class Plan(BaseModel):
    model: ModelGeometry
    params: ParamCount
    hardware: HardwareProfile
    traffic: Traffic
    kv_cache_dtype: str
    devices: int
    max_memory_utilization: float
    vllm_support: dict[str, str]
    ranking: Ranking
    chosen: Candidate
    candidates: list[Candidate]
    notes: list[str] = []


def make_plan(
    *,
    geo: ModelGeometry,
    params: ParamCount,
    hardware: HardwareProfile,
    traffic: Traffic,
    format: str = "auto",
    stack: str = "auto",
    kv_dtype: KvDtype = "auto",
    devices: int = 1,
    max_utilization: float = 0.90,
    variant: VariantInfo | None = None,
    checkpoint: VariantInfo | None = None,
    measured: Mapping[str, float] | None = None,
    measured_source: str = "plan --measure",
) -> Plan:
    """Judge every candidate, rank the usable ones and choose the first.

    A `variant` fixes the format and brings its real file sizes; a 16-bit
    `checkpoint` brings the real size of the bf16 candidate. Other formats' weights
    are estimated from the parameter count.
    """
    _check_traffic(geo, traffic)
    if variant is not None:
        if format not in {"auto", variant.format}:
            raise InputError(
                f"--format {format} contradicts the variant, which is {variant.format}",
                "drop --format (the variant decides) or pass a variant of that format",
            )
        format = variant.format
    ranking = prior_ranking(hardware, traffic.concurrency)
    if measured:
        ranking = rerank(ranking.order, measured, measured_source)
    formats = list(load_matrix().formats) if format == "auto" else [format]
    on_disk = {known.format: known for known in (checkpoint, variant) if known is not None}
    candidates = [
        _judge(f, s, geo, params, hardware, traffic, kv_dtype, devices, max_utilization, on_disk.get(f))
        for f in formats
        for s in _stacks_for(f, stack, explicit_format=format != "auto")
    ]
    rate_field = "measured_tok_s" if ranking.basis == "measured" else "prior_tok_s"
    for candidate in candidates:
        setattr(candidate, rate_field, ranking.tokens_per_s.get(candidate.format))
    candidates.sort(key=lambda c: (not c.usable, STATUS_ORDER[c.status], ranking.position(c.format)))
    chosen = candidates[0]
    if not chosen.usable:
        closest = _closest(candidates)
        raise InputError(_why_nothing(closest, hardware, traffic), _fix_for(closest, hardware, format, stack))
    return Plan(
        model=geo,
        params=params,
        hardware=hardware,
        traffic=traffic,
        kv_cache_dtype=kv_dtype,
        devices=devices,
        max_memory_utilization=max_utilization,
        vllm_support={f: support(f, "vllm", hardware).status for f in load_matrix().formats},
        ranking=ranking,
        chosen=chosen,
        candidates=candidates,
        notes=_notes(chosen, hardware, kv_dtype),
    )


def _check_traffic(geo: ModelGeometry, traffic: Traffic) -> None:
    limit = geo.max_position_embeddings
    if limit and traffic.context > limit:
        raise InputError(
            f"--context {traffic.context} exceeds {geo.name}'s max_position_embeddings {limit}",
            f"pass --context {limit} or less",
        )


def _stacks_for(format_id: str, stack: str, explicit_format: bool) -> list[str]:
    """Stacks to judge: the one asked for; all three for an explicit format; else the default."""
    if stack != "auto":
        return [stack]
    return list(STACKS) if explicit_format else [default_stack(format_id)]


def _judge(
    format_id: str,
    stack: str,
    geo: ModelGeometry,
    params: ParamCount,
    hardware: HardwareProfile,
    traffic: Traffic,
    kv_dtype: KvDtype,
    devices: int,
    max_utilization: float,
    on_disk: VariantInfo | None,
) -> Candidate:
    verdict = support(format_id, stack, hardware)
    candidate = Candidate(format=format_id, stack=stack, status=verdict.status, reason=verdict.reason)
    if verdict.status == "refused":
        return candidate
    fmt = load_matrix().formats[format_id]
    if on_disk is not None:
        weights, source = on_disk.weights_bytes, f"files of {on_disk.path}"
    else:
        weights, source = weight_bytes(params, fmt), f"{params.source} x {fmt.weight_bits:g} bits/weight"
    candidate.weights_bytes, candidate.weights_source = weights, source
    candidate.artifact = str(on_disk.path) if on_disk is not None else None

    def make(tp: int):
        return budget(
            geo=geo,
            fmt=fmt,
            stack=stack,
            device_kind=hardware.kind,
            device_memory_bytes=hardware.memory_bytes,
            weights_total=weights,
            weights_source=source,
            context=traffic.context,
            concurrency=traffic.concurrency,
            kv_dtype=kv_dtype,
            tp=tp,
        )

    candidate.fit = fit(
        make,
        geo=geo,
        hardware=hardware,
        stack=stack,
        context=traffic.context,
        concurrency=traffic.concurrency,
        devices=devices,
        max_utilization=max_utilization,
        weights_total=weights,
    )
    if not candidate.fit.fits and candidate.reason is None:
        candidate.reason = candidate.fit.reason
    candidate.decode_roofline_tok_s = decode_roofline(candidate.fit, hardware, traffic)
    return candidate


def decode_roofline(fit_: Fit, hardware: HardwareProfile, traffic: Traffic) -> float | None:
    """Upper bound on aggregate decode tokens/s from memory bandwidth alone.

    Each decode step streams the weight shard once plus every sequence's KV cache
    (half the context on average). Real servers reach a fraction of this; on CPU,
    compute (dequantization) can dominate instead, which is why measurements win.
    """
    if not hardware.bandwidth_gbs or not fit_.fits:
        return None
    b = fit_.budget
    step_bytes = b.weights_bytes + traffic.concurrency * b.kv_bytes_per_token * traffic.context / 2
    return round(traffic.concurrency * hardware.bandwidth_gbs * 1e9 / step_bytes, 1)


def _notes(chosen: Candidate, hardware: HardwareProfile, kv_dtype: str) -> list[str]:
    """What a reader of the numbers should not miss."""
    fit_, notes = chosen.fit, []
    naive = fit_.replicas_weights_only > fit_.replicas_per_device
    if hardware.kind == "gpu" and fit_.tensor_parallel == 1 and naive:
        notes.append(
            f"Counting weights only, {fit_.replicas_weights_only} replicas would fit per device; with the KV cache "
            f"and overhead counted, {fit_.replicas_per_device} do."
        )
    if kv_dtype == "auto" and fit_.budget.kv_bytes > fit_.budget.weights_bytes:
        notes.append("The KV cache outweighs the weights: --kv-cache-dtype fp8 halves it.")
    return notes


def _closest(candidates: list[Candidate]) -> Candidate:
    """The runnable candidate that needs the least memory, else the first refusal."""
    sized = [c for c in candidates if c.status != "refused" and c.fit is not None]
    if not sized:
        return candidates[0]
    return min(sized, key=lambda c: (c.fit.tensor_parallel or 99, c.fit.budget.total_bytes))


def _why_nothing(best: Candidate, hardware: HardwareProfile, traffic: Traffic) -> str:
    if best.status == "refused":
        return f"{best.format} cannot be served with {best.stack} on {hardware.name}: {best.reason}"
    return (
        f"no format fits {hardware.name} for {traffic.concurrency} x {traffic.context} tokens; "
        f"the smallest, {best.format} on {best.stack}, {best.reason}"
    )


def _fix_for(best: Candidate, hardware: HardwareProfile, format: str, stack: str) -> str:
    if best.status == "refused":
        if format != "auto" or stack != "auto":
            return "pick another --format/--stack (docs/plan.md lists the matrix)"
        return "use hardware that supports one of the formats"
    if best.fit is not None and best.fit.tensor_parallel:
        return f"pass --devices {best.fit.tensor_parallel} or more, or lower --context/--concurrency"
    if hardware.kind == "cpu":
        return "lower --context or --concurrency, use --kv-cache-dtype fp8, or a smaller model"
    return "lower --context or --concurrency, use --kv-cache-dtype fp8, or choose a larger GPU"
