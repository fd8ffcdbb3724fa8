"""A run directory as the pipeline leaves it: baseline, plan, a selected variant with a verdict.

The control is the real tiny checkpoint; the plan is made by the real planner; the
variant is serve's fake W4A16 folder (only its shape is read, nothing is loaded).
"""

from __future__ import annotations

import json
from pathlib import Path

from quantship.models.checkpoint import checkpoint_files
from quantship.plan.api import PlanArgs, plan_from_args, write_plan
from quantship.rundir import RunDir, atomic_write_json
from tests.support.serve_files import W4A16, make_variant

VARIANT = "w4"
NODES = {"count": 2, "gpus_per_node": 8, "memory_gib": 1024, "cpus": 96}


def baseline_inputs(runs: RunDir, checkpoint: Path) -> dict[str, str]:
    """What `quantship baseline` records of the checkpoint (evaluate.baseline hashes the same files)."""
    return runs.hash_inputs({f"model/{k}": v for k, v in checkpoint_files(checkpoint).items()})


def make_run(
    root: Path, checkpoint: Path, hardware: str = "h100", verdict: bool = True, quant: dict = W4A16, **plan
) -> Path:
    runs = RunDir(root)
    with runs.stage("baseline", {}, baseline_inputs(runs, checkpoint)) as stage:
        atomic_write_json(stage.path("baseline.json"), {"checkpoint": {"path": str(checkpoint)}})
    args = PlanArgs(model=checkpoint, hardware=hardware, **{"context": 512, "concurrency": 8, **plan})
    write_plan(runs, args, plan_from_args(args))
    make_variant(root, VARIANT, quant, verdict=verdict)
    selection = {"selected": VARIANT, "variant_fingerprint": runs.manifest(f"variants/{VARIANT}")["fingerprint"]}
    (root / "validation" / "selected.json").write_text(json.dumps(selection))  # as validate --select writes it
    return root


def deploy_config(**overrides) -> dict:
    return {"nodes": dict(NODES), "traffic": {"requests_per_s": 20}, **overrides}
