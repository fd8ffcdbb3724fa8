"""`quantship validate`: gate variants on measured quality against the baseline; write the report."""

from __future__ import annotations

from pathlib import Path

import typer

from quantship.commands.common import name_option, resolve_run_dir, run_dir_option


def register(app: typer.Typer) -> None:
    @app.command("validate")
    def validate(
        variant: list[str] = typer.Option(None, "--variant", "-v", help="Variant(s) to validate (default: every variant in the run)."),
        run_dir: Path = run_dir_option(),
        name: str = name_option(),
        thresholds_file: Path = typer.Option(None, "--thresholds", help="YAML file of gate thresholds (see docs/validate.md)."),
        max_perplexity_delta: float = typer.Option(
            None, "--max-perplexity-delta",
            help="Fail above this relative perplexity increase (default 0.10).",
        ),
        max_kl_mean: float = typer.Option(None, "--max-kl-mean", help="Fail above this mean KL, nats (default 0.05)."),
        min_top1: float = typer.Option(None, "--min-top1-agreement", help="Fail below this same-top-token rate (default 0.90)."),
        long_window: int = typer.Option(2048, "--long-window", help="Longest window for the long-context slice (capped by the model)."),
        long_windows: int = typer.Option(2, "--long-windows", help="Number of long windows."),
        recover: bool = typer.Option(
            False, "--recover",
            help=(
                "For failing llm-compressor or GGUF variants: keep the most sensitive blocks at 8-bit (W8A16 / Q8_0), "
                "requantize, revalidate."
            ),
        ),
        max_bits_per_weight: float = typer.Option(8.0, "--max-bits-per-weight", help="--recover stops before a variant exceeds this size."),
        blocks_per_step: int = typer.Option(2, "--blocks-per-step", help="--recover: blocks moved to higher precision per step."),
        tasks: str = typer.Option(
            "quantship_cloze,quantship_next_sentence", "--tasks",
            help="Comma-separated lm-eval tasks (built-in offline ones by default; 'none' skips task accuracy).",
        ),
        select: str = typer.Option(None, "--select", help="Write validation/selected.json by this policy: smallest-passing."),
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
        from quantship.validate.gate import Thresholds
        from quantship.validate.recover import RecoverOptions
        from quantship.validate.run import ValidateOptions
        from quantship.validate.stage import run_validate

        if long_windows < 1 or long_window < 2:
            raise InputError("--long-window must be >= 2 and --long-windows >= 1", "pass positive sizes")
        thresholds = Thresholds.load(
            thresholds_file, {"max_perplexity_delta": max_perplexity_delta, "max_kl_mean": max_kl_mean, "min_top1_agreement": min_top1}
        )
        run = RunDir(resolve_run_dir(run_dir, name))
        task_list = [] if tasks.strip().lower() == "none" else [t.strip() for t in tasks.split(",") if t.strip()]
        options = ValidateOptions(long_window=long_window, long_windows=long_windows, tasks=task_list)
        settings = RecoverOptions(max_bits_per_weight=max_bits_per_weight, blocks_per_step=max(1, blocks_per_step)) if recover else None
        if url is not None:
            if not variant or len(variant) != 1:
                raise InputError(
                    "--url scores one served model, so it needs exactly one --variant",
                    "pass --variant NAME (or --variant control for the baseline checkpoint)",
                )
            from quantship.validate.stage import run_validate_served

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
            typer.echo(f"recover {record['variant']}: {record['outcome']}")
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
