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
        max_perplexity_delta: float = typer.Option(None, "--max-perplexity-delta", help="Fail above this relative perplexity increase (default 0.10)."),
        max_kl_mean: float = typer.Option(None, "--max-kl-mean", help="Fail above this mean KL, nats (default 0.05)."),
        min_top1: float = typer.Option(None, "--min-top1-agreement", help="Fail below this same-top-token rate (default 0.90)."),
        long_window: int = typer.Option(2048, "--long-window", help="Longest window for the long-context slice (capped by the model)."),
        long_windows: int = typer.Option(2, "--long-windows", help="Number of long windows."),
        recover: bool = typer.Option(False, "--recover", help="For failing llm-compressor variants: keep the most sensitive blocks at 8-bit, requantize, revalidate."),
        max_bits_per_weight: float = typer.Option(8.0, "--max-bits-per-weight", help="--recover stops before a variant exceeds this size."),
        blocks_per_step: int = typer.Option(2, "--blocks-per-step", help="--recover: blocks moved to higher precision per step."),
        tasks: str = typer.Option(
            "quantship_cloze,quantship_next_sentence", "--tasks",
            help="Comma-separated lm-eval tasks (built-in offline ones by default; 'none' skips task accuracy).",
        ),
        select: str = typer.Option(None, "--select", help="Write validation/selected.json by this policy: smallest-passing."),
        force: bool = typer.Option(False, "--force", help="Re-measure even if variant, baseline and thresholds are unchanged."),
    ) -> None:
        """Run every quality check on each variant; exit 0 only when all of them pass."""
        from quantship.errors import GateFailed, InputError
        from quantship.progress import stderr_console
        from quantship.rundir import RunDir, read_json
        from quantship.validate.baseline_data import load_baseline
        from quantship.validate.gate import Thresholds
        from quantship.validate.recover import RecoverOptions, recover_variant
        from quantship.validate.report import write_report
        from quantship.validate.run import ValidateOptions, validate_variant, validation_path
        from quantship.validate.select import POLICIES, select_variant

        if select is not None and select not in POLICIES:
            raise InputError(f"unknown --select policy {select!r}", f"use one of: {', '.join(POLICIES)}")
        if long_windows < 1 or long_window < 2:
            raise InputError("--long-window must be >= 2 and --long-windows >= 1", "pass positive sizes")
        thresholds = Thresholds.load(
            thresholds_file, {"max_perplexity_delta": max_perplexity_delta, "max_kl_mean": max_kl_mean, "min_top1_agreement": min_top1}
        )
        run = RunDir(resolve_run_dir(run_dir, name))
        baseline = load_baseline(run)
        names = variant or _all_variants(run)
        if not names:
            raise InputError(f"no variants in {run.root / 'variants'}", f"run `quantship quantize --run-dir {run.root}` first")
        console = stderr_console()
        task_list = [] if tasks.strip().lower() == "none" else [t.strip() for t in tasks.split(",") if t.strip()]
        options = ValidateOptions(long_window=long_window, long_windows=long_windows, tasks=task_list)
        results = [validate_variant(run, v, baseline, thresholds, options, console, force=force) for v in names]
        recovered: dict[str, str] = {}
        if recover:
            settings = RecoverOptions(max_bits_per_weight=max_bits_per_weight, blocks_per_step=max(1, blocks_per_step))
            for r in [r for r in results if not r["passed"]]:
                record = recover_variant(run, r["variant"], baseline, thresholds, options, settings, console)
                typer.echo(f"recover {r['variant']}: {record['outcome']}")
                if record["recovered"]:
                    recovered[r["variant"]] = record["recovered"]
                    results.append(read_json(validation_path(run, record["recovered"])))
        for r in results:
            verdict = "PASS" if r["passed"] else "FAIL " + ", ".join(r["failed_checks"])
            typer.echo(f"{r['variant']}: {verdict}  ({_summary(r)})")
        report = write_report(run)
        typer.echo(f"report: {report}")
        if select is not None:
            chosen = select_variant(run, results, select)
            typer.echo(f"selected: {chosen['selected']} ({chosen['reason']})")
        failed = [r for r in results if not r["passed"] and r["variant"] not in recovered and not _is_step(r["variant"], recovered)]
        if failed:
            raise GateFailed(
                "gate failed: " + "; ".join(f"{r['variant']} ({', '.join(r['failed_checks'])})" for r in failed),
                f"see {run.root / 'validation'} and {report}",
            )


def _is_step(variant: str, recovered: dict[str, str]) -> bool:
    """An intermediate --recover step of a variant that was recovered later."""
    return any(variant.startswith(f"{source}-mp") for source in recovered)


def _all_variants(run) -> list[str]:
    folder = run.root / "variants"
    return sorted(p.name for p in folder.iterdir() if (p / "manifest.json").is_file()) if folder.is_dir() else []


def _summary(result: dict) -> str:
    parts = []
    for name, check in result["checks"].items():
        value = check["value"]
        parts.append(f"{name}={'error' if value is None else f'{value:.4g}'}")
    return " ".join(parts)
