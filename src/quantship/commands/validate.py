"""`quantship validate`: gate variants on measured quality against the baseline; write the report."""

from __future__ import annotations

from pathlib import Path

import typer

from quantship.commands.common import given, name_option, option, resolve_run_dir, run_dir_option
from quantship.options import RecoverOptions, Thresholds, ValidateOptions, ValidateStageOptions


def register(app: typer.Typer) -> None:
    @app.command("validate")
    def validate(
        ctx: typer.Context,
        variant: list[str] = typer.Option(None, "--variant", "-v", help="Variant(s) to validate (default: every variant in the run)."),
        run_dir: Path = run_dir_option(),
        name: str = name_option(),
        thresholds_file: Path = typer.Option(None, "--thresholds", help="YAML file of gate thresholds (see docs/validate.md)."),
        max_perplexity_delta: float = option(Thresholds, "max_perplexity_delta", "--max-perplexity-delta"),
        max_kl_mean: float = option(Thresholds, "max_kl_mean", "--max-kl-mean"),
        min_top1_agreement: float = option(Thresholds, "min_top1_agreement", "--min-top1-agreement"),
        long_window: int = option(ValidateOptions, "long_window", "--long-window"),
        long_windows: int = option(ValidateOptions, "long_windows", "--long-windows"),
        recover: bool = option(ValidateStageOptions, "recover", "--recover"),
        target: str = option(RecoverOptions, "target", "--target"),
        max_bits_per_weight: float = option(RecoverOptions, "max_bits_per_weight", "--max-bits-per-weight"),
        max_gate_runs: int = option(RecoverOptions, "max_gate_runs", "--max-gate-runs"),
        sensitivity_tokens: int = option(RecoverOptions, "sensitivity_tokens", "--sensitivity-tokens"),
        types: str = option(RecoverOptions, "types", "--types"),
        tasks: str = option(ValidateOptions, "tasks", "--tasks"),
        # Selecting is an action the verb takes only when asked; a pipeline always selects.
        select: str = option(ValidateStageOptions, "select", "--select", default=None),
        force: bool = typer.Option(False, "--force", help="Re-measure even if variant, baseline and thresholds are unchanged."),
        url: str = typer.Option(
            None, "--url",
            help=(
                "Also score this running vLLM server (OpenAI API) on the baseline's windows; "
                "needs one --variant ('control' for the served baseline checkpoint)."
            ),
        ),
        served_model: str = typer.Option(
            None, "--served-model",
            help="--url: the model name on the server (default: the only one it serves).",
        ),
    ) -> None:
        """Run every quality check on each variant; exit 0 only when all of them pass."""
        from quantship.errors import GateFailed, InputError
        from quantship.progress import stderr_console
        from quantship.rundir import RunDir
        from quantship.validate.orchestrate import run_validate

        typed = given(ctx)
        thresholds = Thresholds.load(thresholds_file, {
            key: value for key, value in (("max_perplexity_delta", max_perplexity_delta), ("max_kl_mean", max_kl_mean),
                                          ("min_top1_agreement", min_top1_agreement)) if key in typed
        })
        run = RunDir(resolve_run_dir(run_dir, name))
        task_list = [] if tasks.strip().lower() == "none" else [t.strip() for t in tasks.split(",") if t.strip()]
        options = ValidateOptions(long_window=long_window, long_windows=long_windows, tasks=task_list)
        settings = None
        if recover:
            settings = RecoverOptions(
                target=target, max_bits_per_weight=max_bits_per_weight, max_gate_runs=max_gate_runs,
                sensitivity_tokens=sensitivity_tokens, types=[t.strip() for t in types.split(",")] if types else None,
            )
        if url is not None:
            if not variant or len(variant) != 1:
                raise InputError(
                    "--url scores one served model, so it needs exactly one --variant",
                    "pass --variant NAME (or --variant control for the baseline checkpoint)",
                )
            from quantship.validate.orchestrate import run_validate_served

            result = run_validate_served(run, variant[0], url, thresholds, options, stderr_console(), served_model, force)
            verdict = "PASS" if result["passed"] else "FAIL " + ", ".join(result["failed_checks"])
            typer.echo(
                f"{result['variant']} at {result['served']['url']} ({result['served']['model']}): {verdict}  ({summary_line(result)})"
            )
            if not result["passed"]:
                raise GateFailed(
                    f"gate failed: {result['variant']} ({', '.join(result['failed_checks'])})",
                    f"see {run.root / 'validation'}",
                )
            return
        outcome = run_validate(run, variant, thresholds, options, stderr_console(), settings, select, force)
        for record in outcome.recoveries:
            typer.echo(f"allocate {record['variant']}: {record['outcome']}")
        for r in outcome.results:
            verdict = "PASS" if r["passed"] else "FAIL " + ", ".join(r["failed_checks"])
            typer.echo(f"{r['variant']}: {verdict}  ({summary_line(r)})")
        typer.echo(f"report: {outcome.report}")
        if outcome.selection is not None:
            typer.echo(f"selected: {outcome.selection['selected']} ({outcome.selection['reason']})")
        if outcome.failed:
            raise GateFailed(
                "gate failed: " + "; ".join(f"{r['variant']} ({', '.join(r['failed_checks'])})" for r in outcome.failed),
                f"see {run.root / 'validation'} and {outcome.report}",
            )


def summary_line(result: dict) -> str:
    """Each check's measured value, for one line of terminal output."""
    parts = []
    for name, check in result["checks"].items():
        value = check["value"]
        parts.append(f"{name}={'error' if value is None else f'{value:.4g}'}")
    return " ".join(parts)
