"""Traffic target -> replicas and devices, per format.

A replica's throughput comes from the best evidence the run has: the run's own bench
(requests/s at its highest concurrency, when the plan's hardware is the machine that
benched), then `plan --measure` tokens/s, then the plan's memory-bandwidth roofline.
The roofline is an upper bound on throughput, so replicas sized from it are a minimum.
Concurrent streams are sized from the plan's budget: one replica holds `concurrency`
sequences of `context` tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from quantship.deploy.config import Nodes, Traffic
from quantship.deploy.sizing import size_format
from quantship.errors import InputError
from quantship.formats.matrix import load_matrix
from quantship.plan.planner import Candidate, Plan
from quantship.serve.stacks import for_engine


@dataclass(frozen=True)
class Capacity:
    format: str
    stack: str
    per_replica: float  # requests/s or streams one replica sustains
    unit: str  # "req/s" | "streams"
    source: str  # bench | plan --measure | roofline bound | plan budget
    replicas: int
    devices_per_replica: int
    devices: int
    reason: str | None = None  # set when the format cannot be deployed

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def replicas_for(
    traffic: Traffic, candidate: Candidate, plan: Plan, bench_rps: float | None = None
) -> Capacity:
    """How many replicas of one sized candidate carry the traffic target."""
    tp = candidate.fit.tensor_parallel
    per_device = tp if plan.hardware.kind == "gpu" else 1
    if traffic.concurrent_streams is not None:
        per, unit, source = float(plan.traffic.concurrency), "streams", "plan budget"
        wanted = traffic.concurrent_streams
    else:
        unit, wanted = "req/s", traffic.requests_per_s
        if bench_rps:
            per, source = bench_rps, "bench"
        elif candidate.measured_tok_s:
            per, source = candidate.measured_tok_s / traffic.output_tokens, "plan --measure"
        elif candidate.decode_roofline_tok_s:
            per, source = candidate.decode_roofline_tok_s / traffic.output_tokens, "roofline bound"
        else:
            raise InputError(
                f"{candidate.format}: no measured throughput and no bandwidth to bound it",
                "run `quantship bench` or `quantship plan --measure`, or size by traffic.concurrent_streams",
            )
    replicas = max(1, math.ceil(wanted / per))
    return Capacity(candidate.format, candidate.stack, round(per, 3), unit, source, replicas, per_device,
                    replicas * per_device)


def capacity_table(plan: Plan, nodes: Nodes, traffic: Traffic, measured: dict[str, float]) -> list[Capacity]:
    """Every format of the matrix on the plan's hardware; `measured` maps a format to bench requests/s."""
    rows = []
    for format_id in load_matrix().formats:
        try:
            candidate = size_format(plan, format_id, nodes)
        except InputError as error:
            rows.append(Capacity(format_id, "-", 0.0, "-", "-", 0, 0, 0, error.problem))
            continue
        if for_engine(candidate.stack, plan.hardware.kind) is None:
            reason = f"served by {candidate.stack}, which quantship does not deploy"
            rows.append(Capacity(format_id, candidate.stack, 0.0, "-", "-", 0, 0, 0, reason))
            continue
        rows.append(replicas_for(traffic, candidate, plan, measured.get(format_id)))
    return rows
