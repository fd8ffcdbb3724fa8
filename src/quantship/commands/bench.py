"""`quantship bench`: latency and throughput of one or two OpenAI-compatible endpoints."""

from __future__ import annotations

from pathlib import Path

import typer

from quantship.commands.common import name_option, resolve_run_dir, run_dir_option
from quantship.errors import InputError


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
        url: str = typer.Option(..., "--url", help="Baseline server root or /v1 URL, e.g. http://127.0.0.1:8000."),
        model: str = typer.Option(None, "--model", help="Served model name (default: the first in /v1/models)."),
        label: str = typer.Option(None, "--label", help="Name in tables and plots (default: the model name)."),
        compare_url: str = typer.Option(None, "--compare-url", help="Second endpoint, measured side by side."),
        compare_model: str = typer.Option(None, "--compare-model", help="Served model name at --compare-url."),
        compare_label: str = typer.Option(None, "--compare-label", help="Name of the second endpoint."),
        api: str = typer.Option("chat", "--api", help="chat (/v1/chat/completions) or completions (/v1/completions)."),
        concurrency: str = typer.Option(
            None, "--concurrency", help="Fixed-concurrency sweep, e.g. 1,4,16 (default 1)."
        ),
        rate: str = typer.Option(None, "--rate", help="Poisson request rates in req/s instead, e.g. 0.5,2."),
        max_concurrency: int = typer.Option(
            None, "--max-concurrency", min=1, help="Cap on requests in flight in --rate mode."
        ),
        requests: int = typer.Option(32, "--requests", min=1, help="Measured requests per endpoint and level."),
        max_tokens: int = typer.Option(64, "--max-tokens", min=1, help="Output tokens per request."),
        ignore_eos: bool = typer.Option(
            True, "--ignore-eos/--stop-at-eos", help="Generate exactly --max-tokens (vLLM, llama.cpp)."
        ),
        warmup: int = typer.Option(
            2, "--warmup", min=0, help="Unmeasured requests per endpoint before the first level."
        ),
        rounds: int = typer.Option(2, "--rounds", min=1, help="ABBA rounds per level when comparing two endpoints."),
        slo_ttft_ms: float = typer.Option(None, "--slo-ttft-ms", min=0, help="Goodput target for time to first token."),
        slo_e2e_ms: float = typer.Option(None, "--slo-e2e-ms", min=0, help="Goodput target for end-to-end latency."),
        prompts: str = typer.Option(
            "builtin", "--prompts", help='`builtin` or a JSONL file of {"prompt"} / {"messages"}.'
        ),
        seed: int = typer.Option(0, "--seed", help="Seed of the Poisson arrival times."),
        timeout_s: float = typer.Option(
            300.0, "--timeout-s", min=1, help="Limit per request; slower ones count as errors."
        ),
        server_metrics: bool = typer.Option(
            True,
            "--server-metrics/--no-server-metrics",
            help="Cross-check against the server's /metrics histograms (vLLM).",
        ),
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

        from quantship.bench.models import BenchSettings
        from quantship.bench.output import bench_into_run_dir
        from quantship.bench.progress import RichProgress
        from quantship.bench.prompts import load_prompts
        from quantship.bench.table import level_tables
        from quantship.bench.targets import distinct_labels, resolve_target
        from quantship.rundir import RunDir

        if api not in ("chat", "completions"):
            raise InputError(f"--api {api!r} is not known", "use --api chat or --api completions")
        if concurrency is not None and rate is not None:
            raise InputError(
                "--concurrency and --rate were both given", "sweep one: concurrency levels or request rates"
            )
        if (compare_model or compare_label or compare_metrics_url) and not compare_url:
            raise InputError(
                "--compare-model/--compare-label/--compare-metrics-url need a second endpoint", "add --compare-url URL"
            )
        if "/" in tag or tag.startswith("."):
            raise InputError(f"--tag {tag!r} must be a plain folder name", "e.g. --tag bf16-vs-w4a16")
        mode = "rate" if rate is not None else "concurrency"
        levels = (
            _levels(rate, "--rate", False) if rate is not None else _levels(concurrency or "1", "--concurrency", True)
        )
        prompt_set = load_prompts(prompts)
        targets = [resolve_target(url, model, api, label, metrics_url)]
        if compare_url:
            other = resolve_target(compare_url, compare_model, api, compare_label, compare_metrics_url)
            targets = list(distinct_labels(targets[0], other))
        settings = BenchSettings(
            mode=mode,
            levels=levels,
            requests=requests,
            warmup=warmup,
            max_tokens=max_tokens,
            ignore_eos=ignore_eos,
            rounds=rounds,
            seed=seed,
            timeout_s=timeout_s,
            max_concurrency=max_concurrency,
            slo_ttft_ms=slo_ttft_ms,
            slo_e2e_ms=slo_e2e_ms,
            prompts=prompts,
            prompt_count=len(prompt_set),
        )
        with RichProgress() as progress:
            report, folder = bench_into_run_dir(
                RunDir(resolve_run_dir(run_dir, name)), tag, targets, prompt_set, settings, progress, server_metrics
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
