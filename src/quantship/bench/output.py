"""Writes a finished benchmark into its run-directory stage folder."""

from __future__ import annotations

import json
from pathlib import Path

from quantship.bench.models import BenchReport, BenchSettings, RequestRecord, Target
from quantship.bench.plots import latency_cdfs, throughput
from quantship.bench.prompts import Prompt
from quantship.bench.runner import Progress, run_bench
from quantship.rundir import RunDir, atomic_write_json, atomic_write_text

SUMMARY = "summary.json"
REQUESTS = "requests.jsonl"
CDF_PLOT = "latency_cdf.png"
THROUGHPUT_PLOT = "throughput.png"


def write_outputs(folder: Path, report: BenchReport, records: list[RequestRecord]) -> list[Path]:
    """summary.json (the report), requests.jsonl (every request, warm-up marked) and plots."""
    folder = Path(folder)
    atomic_write_json(folder / SUMMARY, report.model_dump(mode="json"))
    lines = "".join(json.dumps(r.model_dump(mode="json")) + "\n" for r in records)
    atomic_write_text(folder / REQUESTS, lines)
    return [
        folder / SUMMARY,
        folder / REQUESTS,
        latency_cdfs(report, records, folder / CDF_PLOT),
        throughput(report, folder / THROUGHPUT_PLOT),
    ]


def bench_into_run_dir(
    rundir: RunDir,
    tag: str,
    targets: list[Target],
    prompts: list[Prompt],
    settings: BenchSettings,
    progress: Progress | None = None,
    server_metrics: bool = True,
) -> tuple[BenchReport, Path]:
    """Run a benchmark as the `bench/<tag>` stage: published whole, with its manifest, or not at all."""
    import asyncio

    params = {"settings": settings.model_dump(mode="json"), "targets": [t.model_dump() for t in targets]}
    with rundir.stage(f"bench/{tag}", params, {}) as stage:
        report, records = asyncio.run(run_bench(targets, prompts, settings, progress, server_metrics))
        write_outputs(stage.staging, report, records)
    return report, rundir.stage_dir(f"bench/{tag}")
