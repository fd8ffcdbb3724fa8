"""The validate stage: gate every variant against the baseline, recover failing ones, report, select."""

from __future__ import annotations

from quantship import layout
from quantship.errors import GateFailed
from quantship.options import ValidateStageOptions
from quantship.quantize.variants import completed_variants
from quantship.rundir import RunDir
from quantship.stages import Context, Outcome
from quantship.validate.orchestrate import run_validate
from quantship.validate.verdicts import load_selection

Options = ValidateStageOptions


def run(run_dir: RunDir, options: ValidateStageOptions, context: Context) -> Outcome:
    """Validate the run's variants (each verdict kept while its key is unchanged); GateFailed when none passes."""
    done = set(completed_variants(run_dir))
    names = [v for v in context.variants if v in done] if context.variants is not None else sorted(done)
    started = _now()
    outcome = run_validate(
        run_dir, names, options.thresholds, options.measuring(), context.console, options.recover, options.select,
        context.force,
    )
    verdicts = ", ".join(f"{r['variant']} {'pass' if r['passed'] else 'FAIL'}" for r in outcome.results)
    selected = (outcome.selection or {}).get("selected")
    if not selected:
        failing = "; ".join([f"{r['variant']}: {', '.join(r['failed_checks'])}" for r in outcome.results]
                            + [f"allocation from {r['variant']}: {r['outcome']}" for r in outcome.recoveries])
        raise GateFailed(f"gate failed, no variant passed ({failing})", f"nothing was served; see {outcome.report}")
    measured = any(r["validated_at"] >= started for r in outcome.results)
    return Outcome(
        "ran" if measured else "kept",
        f"{verdicts}; selected {selected}",
        {"selected": selected, "model card": run_dir.stage_dir(layout.variant(selected)) / "README.md", "report": outcome.report},
        outcome,
    )


def load(run_dir: RunDir) -> str:
    """The selected variant, refused when the selection is stale (quantship.validate.verdicts)."""
    return load_selection(run_dir)


def _now() -> str:
    import time

    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
