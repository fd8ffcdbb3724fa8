"""What a run directory says about the two models to deploy, read through serve's own functions.

The treatment is the variant `validate --select` chose, refused exactly as `quantship
serve` refuses it (no passing verdict, files that differ from the manifest); the control
is the checkpoint the baseline was measured on. Nothing here re-parses what serve and
plan already read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from quantship import layout
from quantship.bench.models import BenchReport
from quantship.bench.output import SUMMARY
from quantship.errors import InputError
from quantship.layout import baseline_checkpoint
from quantship.models.checkpoint import checkpoint_files
from quantship.plan.api import read_plan
from quantship.plan.planner import Plan
from quantship.rundir import RunDir, read_json
from quantship.serve import preflight
from quantship.serve.server import selected_variant
from quantship.serve.target import ServeTarget, from_model_path, from_variant

CONTROL = "control"
TREATMENT = "treatment"
BENCH_CONTROL_LABEL = "baseline"  # the pipeline benches the control under this label


@dataclass(frozen=True)
class RunModels:
    """The plan and the two models of a run, each with its bench throughput when measured."""

    root: Path
    plan: Plan
    control: ServeTarget
    treatment: ServeTarget
    bench: BenchReport | None


def read_run(run_dir: Path) -> RunModels:
    runs = RunDir(run_dir)
    plan = read_plan(runs)
    treatment = from_variant(run_dir, selected_variant(run_dir))
    checks = [preflight.verdict(treatment, force=False)]
    preflight.raise_on_failure(checks)
    preflight.raise_on_failure([preflight.hashes(treatment)])
    control = from_model_path(baseline_checkpoint(runs))
    return RunModels(Path(run_dir), plan, control, treatment, _latest_bench(runs))


def artifact_hashes(run: RunModels, role: str) -> dict[str, str]:
    """sha256 by relative path: the variant's manifest; the control's files as the baseline hashed them.

    The control's are hashed again (cached by size and mtime) and must match what the
    baseline recorded: a checkpoint edited since it was measured is not the control.
    """
    if role == TREATMENT:
        return {rel: meta["sha256"] for rel, meta in (run.treatment.manifest or {}).get("outputs", {}).items()}
    runs = RunDir(run.root)
    current = runs.hash_inputs(checkpoint_files(run.control.folder))
    recorded = {k.removeprefix("model/"): v for k, v in ((runs.manifest(layout.BASELINE) or {}).get("inputs") or {}).items()
                if k.startswith("model/")}
    if changed := sorted(rel for rel, digest in recorded.items() if current.get(rel) != digest):
        raise InputError(
            f"the control checkpoint {run.control.folder} changed since the baseline was measured ({', '.join(changed)})",
            f"restore it, or re-run `quantship baseline --run-dir {run.root}`",
        )
    return current


def _latest_bench(runs: RunDir) -> BenchReport | None:
    """The newest completed bench stage of the run (bench/<tag>/summary.json), if any."""
    done = [p for p in runs.stage_dir(layout.BENCH).glob(f"*/{SUMMARY}") if runs.manifest(layout.bench(p.parent.name))]
    if not done:
        return None
    newest = max(done, key=lambda p: p.stat().st_mtime)
    return BenchReport.model_validate(read_json(newest))


def bench_requests_per_s(run: RunModels, role: str) -> float | None:
    """Requests/s one server of `role` sustained at the bench's highest concurrency.

    Only when the plan is for this machine's CPU (the run benched here): a bench on
    this host says nothing about an H100.
    """
    report = run.bench
    if report is None or report.settings.mode != "concurrency" or run.plan.hardware.id != "cpu":
        return None
    label = BENCH_CONTROL_LABEL if role == CONTROL else run.treatment.name
    rows = [s for s in report.summaries if s.endpoint == label and s.ok > 0 and s.requests_per_s > 0]
    return max(rows, key=lambda s: s.level).requests_per_s if rows else None
