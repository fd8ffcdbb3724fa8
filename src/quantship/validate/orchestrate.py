"""The validate stage as one call: measure variants, allocate failing ones per tensor, report, select.

`quantship validate` and `quantship run` both go through `run_validate`, so the gate a
pipeline applies is exactly the one the CLI verb applies.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from quantship.errors import InputError
from quantship.options import POLICIES, RecoverOptions, Thresholds
from quantship.quantize.variants import completed_variants
from quantship.rundir import RunDir, read_json
from quantship.validate.baseline_data import load_baseline
from quantship.validate.model_card import write_model_card
from quantship.validate.report import write_report
from quantship.validate.select import select_variant
from quantship.validate.variant import ValidateOptions, validate_variant
from quantship.validate.verdicts import verdict_path


@dataclass
class ValidateOutcome:
    results: list[dict[str, Any]]
    recoveries: list[dict[str, Any]] = field(default_factory=list)
    report: Path | None = None
    selection: dict[str, Any] | None = None

    @property
    def failed(self) -> list[dict[str, Any]]:
        """Failing verdicts that count: a variant an allocation recovered, and its failed builds, no longer do."""
        recovered = {r["variant"] for r in self.recoveries if r["recovered"]}
        steps = {run["variant"] for r in self.recoveries if r["recovered"] for run in r["runs"]}
        return [r for r in self.results if not r["passed"] and r["variant"] not in recovered | steps]


def run_validate(
    run: RunDir, variants: list[str] | None, thresholds: Thresholds, options: ValidateOptions, console: Console,
    recover: RecoverOptions | None = None, select: str | None = None, force: bool = False,
) -> ValidateOutcome:
    """Validate `variants` (default: all), allocate the failing ones if asked; write report.html, the selection and its model card."""
    if select is not None and select not in POLICIES:
        raise InputError(f"unknown selection policy {select!r}", f"use one of: {', '.join(POLICIES)}")
    baseline = load_baseline(run)
    names = variants or completed_variants(run)
    if not names:
        raise InputError(f"no variants in {run.root / 'variants'}", f"run `quantship quantize --run-dir {run.root}` first")
    outcome = ValidateOutcome([validate_variant(run, v, baseline, thresholds, options, console, force=force) for v in names])
    if recover is not None:
        from quantship.validate.mixed_precision import allocate_variant

        for failing in [r for r in outcome.results if not r["passed"]]:
            record = allocate_variant(run, failing["variant"], baseline, thresholds, options, recover, console)
            outcome.recoveries.append(record)
            outcome.results.extend(read_json(verdict_path(run, step["variant"])) for step in record["runs"])
    outcome.report = write_report(run)
    if select is not None:
        outcome.selection = select_variant(run, outcome.results, select)
        if outcome.selection["selected"]:
            write_model_card(run, outcome.selection["selected"])
    return outcome


def run_validate_served(
    run: RunDir, variant: str, url: str, thresholds: Thresholds, options: ValidateOptions, console: Console,
    served_model: str | None = None, force: bool = False,
) -> dict[str, Any]:
    """`validate --url`: the in-process verdict (measured or kept), then the same checks through the server."""
    from quantship.validate.served import Endpoint
    from quantship.validate.served_gate import CONTROL, control_verdict, served_verdict

    baseline = load_baseline(run)
    verdict = (
        control_verdict(baseline, thresholds) if variant == CONTROL
        else validate_variant(run, variant, baseline, thresholds, options, console, force=force)
    )
    endpoint = Endpoint(url, served_model)
    try:
        return served_verdict(run, verdict, endpoint, baseline, thresholds, console)
    finally:
        endpoint.close()
