"""The plan stage: format, stack, memory and tensor parallelism for the hardware, in plan/plan.json."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from quantship import layout
from quantship.options import PlanOptions
from quantship.plan import api
from quantship.plan.planner import Plan
from quantship.rundir import RunDir
from quantship.stages import Context, Outcome

READS_CHECKPOINT = True  # the run resolves the model (and refuses a wrong path) before the first stage
Options = PlanOptions


def run(run_dir: RunDir, options: PlanOptions | None, context: Context, model: Path | None = None, **more: Any) -> Outcome:
    """Plan for `model` (default: the run's checkpoint); `more` adds what only the CLI has (a variant,
    --measure); kept when unchanged."""
    if options is None:
        return Outcome("off", "no plan: section")
    from quantship.stages.measure import measure_on_this_machine

    request = options.args(model or context.checkpoint, run_dir=run_dir.root, **more)
    result = api.plan_from_args(request, measure_on_this_machine)
    written = api.write_plan(run_dir, request, result)
    chosen = result.plan.chosen
    tp = getattr(chosen.fit, "tensor_parallel", None) if chosen.fit is not None else None
    outputs = {"plan": run_dir.root / layout.PLAN_JSON}
    if result.measured is not None:
        outputs["measurements"] = run_dir.stage_dir(layout.PLAN) / "measurements.json"
    return Outcome(
        "ran" if written else "kept",
        f"{chosen.format} on {chosen.stack} ({chosen.status})" + (f", tensor parallel {tp}" if tp else ""),
        outputs,
        result,
    )


def load(run_dir: RunDir) -> Plan:
    """The plan as written (serve takes its tensor-parallel size from it)."""
    return api.read_plan(run_dir)
