"""The baseline stage: verify the checkpoint, record what every variant is compared with."""

from __future__ import annotations

from pathlib import Path

from quantship.evaluate.baseline import run_baseline
from quantship.options import BaselineOptions
from quantship.rundir import RunDir
from quantship.stages import Context, Outcome
from quantship.validate.baseline_data import BaselineData, load_baseline

READS_CHECKPOINT = True  # the run resolves the model (and refuses a wrong path) before the first stage
Options = BaselineOptions


def run(run_dir: RunDir, options: BaselineOptions, context: Context, model: Path | None = None) -> Outcome:
    """Measure `model` (default: the run's checkpoint); kept when its files and the options are unchanged."""
    result, skipped = run_baseline(model or context.checkpoint, run_dir, options, context.console, force=context.force)
    ppl, probes = result["perplexity"], result["probes"]
    return Outcome(
        "kept" if skipped else "ran",
        f"perplexity {ppl['value']:.3f} on {ppl['tokens_scored']:,} tokens of {result['eval']['source']} "
        f"({ppl['tokens_per_s']:,.0f} tok/s); probes {probes['passed']}/{probes['total']}",
        result=result,
    )


def load(run_dir: RunDir) -> BaselineData:
    return load_baseline(run_dir)
