"""docs/kubernetes.md's worked 70B example is what the code computes (no hand-computed numbers)."""

from __future__ import annotations

import json
from pathlib import Path

from quantship.deploy.capacity import capacity_table
from quantship.deploy.config import Nodes, Traffic
from quantship.plan.api import PlanArgs, plan_from_args
from tests.support.model_configs import LLAMA3_70B

DOC = Path(__file__).resolve().parents[2] / "docs" / "kubernetes.md"


def test_worked_example_rows_are_the_codes(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(LLAMA3_70B))
    plan = plan_from_args(PlanArgs(model=tmp_path / "config.json", hardware="h100", context=8192, concurrency=32,
                                   devices=8)).plan
    nodes = Nodes(count=4, gpus_per_node=8, memory_gib=1800, cpus=200)
    streams = capacity_table(plan, nodes, Traffic(concurrent_streams=4 * 32), {})
    rate = capacity_table(plan, nodes, Traffic(requests_per_s=20, output_tokens=256), {})
    text = DOC.read_text()
    rows = 0
    for s, r in zip(streams, rate, strict=True):
        if s.reason:
            continue
        tp = s.devices_per_replica
        row = (f"| {s.format} | {tp} | {s.per_replica:g} | {s.replicas} | {s.devices} | "
               f"{r.per_replica:g} | {r.replicas} | {r.devices} |")
        assert row in text, f"docs/kubernetes.md lacks the computed row {row}"
        rows += 1
    assert rows == 4
