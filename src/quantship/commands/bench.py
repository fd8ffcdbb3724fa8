"""`quantship bench`: latency and throughput of one or two OpenAI-compatible endpoints."""

from __future__ import annotations

from pathlib import Path

import typer

from quantship.commands.common import given, name_option, option, resolve_run_dir, run_dir_option
from quantship.errors import InputError
from quantship.options import BenchOptions


def _levels(text: str, option: str, integer: bool) -> list[float]:
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise InputError(
            f"{option} {text!r} is not a comma-separated list of numbers", f"e.g. {option} 1,4,16"
        ) from None
    if not values or any(v <= 0 for v in values) or (integer and any(v != int(v) for v in values)):
        kind = "positive whole numbers" if integer else "positive numbers"
        raise InputError(f"{option} {text!r} must list {kind}", f"e.g. {option} {'1,4,16' if integer else '0.5,2'}")
    return values


def register(app: typer.Typer) -> None:
    @app.command("bench")
    def bench(
        ctx: typer.Context,
        url: str = typer.Option(..., "--url", help="Baseline server root or /v1 URL, e.g. http://127.0.0.1:8000."),
        model: str = typer.Option(None, "--model", help="Served model name (default: the first in /v1/models)."),
        label: str = typer.Option(None, "--label", help="Name in tables and plots (default: the model name)."),
        compare_url: str = typer.Option(None, "--compare-url", help="Second endpoint, measured side by side."),
        compare_model: str = typer.Option(None, "--compare-model", help="Served model name at --compare-url."),
        compare_label: str = typer.Option(None, "--compare-label", help="Name of the second endpoint."),
        api: str = option(BenchOptions, "api", "--api"),
        concurrency: str = option(BenchOptions, "concurrency", "--concurrency"),
        rate: str = option(BenchOptions, "rate", "--rate"),
        max_concurrency: int = option(BenchOptions, "max_concurrency", "--max-concurrency"),
        requests: int = option(BenchOptions, "requests", "--requests"),
        max_tokens: int = option(BenchOptions, "max_tokens", "--max-tokens"),
        ignore_eos: bool = option(BenchOptions, "ignore_eos", "--ignore-eos/--stop-at-eos"),
        warmup: int = option(BenchOptions, "warmup", "--warmup"),
        rounds: int = option(BenchOptions, "rounds", "--rounds"),
        slo_ttft_ms: float = option(BenchOptions, "slo_ttft_ms", "--slo-ttft-ms"),
        slo_e2e_ms: float = option(BenchOptions, "slo_e2e_ms", "--slo-e2e-ms"),
        prompts: str = option(BenchOptions, "prompts", "--prompts"),
        seed: int = option(BenchOptions, "seed", "--seed"),
        timeout_s: float = option(BenchOptions, "timeout_s", "--timeout-s"),
        server_metrics: bool = option(BenchOptions, "server_metrics", "--server-metrics/--no-server-metrics"),
        metrics_url: str = typer.Option(
            None, "--metrics-url", help="Prometheus URL of --url's server (default: <root>/metrics)."
        ),
        compare_metrics_url: str = typer.Option(
            None, "--compare-metrics-url", help="Prometheus URL of --compare-url's server."
        ),
        tag: str = typer.Option("main", "--tag", help="Results go to <run-dir>/bench/<tag>."),
        run_dir: Path = run_dir_option(),
        name: str = name_option(),
    ) -> None:
        """Measure TTFT, inter-token and end-to-end latency and throughput, side by side.

        Streams requests (fixed concurrency sweep or Poisson arrivals) to one endpoint
        or two in ABBA turns, reports exact p50/p95/p99, output tokens/s, errors and SLO
        goodput, checks its means against the server's Prometheus histograms, and
        writes summary.json, requests.jsonl and plots to <run-dir>/bench/<tag>.
        """
        from rich.console import Console

        from quantship.bench.output import bench_into_run_dir
        from quantship.bench.progress import RichProgress
        from quantship.bench.prompts import load_prompts
        from quantship.bench.table import level_tables
        from quantship.bench.targets import distinct_labels, resolve_target
        from quantship.rundir import RunDir

        if api not in ("chat", "completions"):
            raise InputError(f"--api {api!r} is not known", "use --api chat or --api completions")
        if "concurrency" in given(ctx) and rate is not None:
            raise InputError(
                "--concurrency and --rate were both given", "sweep one: concurrency levels or request rates"
            )
        if (compare_model or compare_label or compare_metrics_url) and not compare_url:
            raise InputError(
                "--compare-model/--compare-label/--compare-metrics-url need a second endpoint", "add --compare-url URL"
            )
        if "/" in tag or tag.startswith("."):
            raise InputError(f"--tag {tag!r} must be a plain folder name", "e.g. --tag bf16-vs-w4a16")
        sweep = (
            {"rate": _levels(rate, "--rate", False)} if rate is not None
            else {"concurrency": [int(c) for c in _levels(concurrency, "--concurrency", True)]}
        )
        options = BenchOptions(
            api=api, max_concurrency=max_concurrency, requests=requests, max_tokens=max_tokens, ignore_eos=ignore_eos,
            warmup=warmup, rounds=rounds, slo_ttft_ms=slo_ttft_ms, slo_e2e_ms=slo_e2e_ms, prompts=prompts, seed=seed,
            timeout_s=timeout_s, server_metrics=server_metrics, **sweep,
        )
        prompt_set = load_prompts(prompts)
        targets = [resolve_target(url, model, api, label, metrics_url)]
        if compare_url:
            other = resolve_target(compare_url, compare_model, api, compare_label, compare_metrics_url)
            targets = list(distinct_labels(targets[0], other))
        settings = options.settings(len(prompt_set))
        with RichProgress() as progress:
            report, folder = bench_into_run_dir(
                RunDir(resolve_run_dir(run_dir, name)), tag, targets, prompt_set, settings, progress, options.server_metrics
            )
        console = Console()
        for table in level_tables(report):
            console.print(table)
        typer.echo(f"results: {folder}")
        failed = [s for s in report.summaries if s.ok == 0]
        if failed:
            first = failed[0]
            kinds = ", ".join(f"{kind} x{count}" for kind, count in first.error_kinds.items())
            raise InputError(
                f"every request to {first.endpoint} at {first.mode} {first.level:g} failed ({kinds})",
                "check that server's log; results were still written to " + str(folder),
            )
