"""The quantize stage: each variant of the run into variants/<name>, with its manifest."""

from __future__ import annotations

from quantship.errors import QuantshipError
from quantship.options import QuantizeOptions
from quantship.quantize.variants import completed_variants, run_quantize
from quantship.rundir import RunDir
from quantship.stages import Context, Outcome

Options = QuantizeOptions


def run(run_dir: RunDir, options: QuantizeOptions, context: Context) -> Outcome:
    """Produce the variants in order (each kept when unchanged); fails when none was produced."""
    results = run_quantize(run_dir, options.variants, context.console, force=context.force, keep_going=options.keep_going)
    made = [r for r in results if r.ok]
    missing = [f"{r.name} ({r.status})" for r in results if not r.ok]
    if not made:
        raise QuantshipError("no variant was produced: " + ", ".join(missing), "see the quantize table above")
    sizes = ", ".join(f"{r.name} {r.bits_per_weight:.2f} bpw" if r.bits_per_weight else r.name for r in made)
    status = "kept" if all(r.status == "skipped" for r in made) else "ran"
    return Outcome(status, sizes + (f"; not produced: {', '.join(missing)}" if missing else ""), result=results)


def load(run_dir: RunDir) -> list[str]:
    """The names of the run's finished variants."""
    return completed_variants(run_dir)
