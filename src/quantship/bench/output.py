"""Writes a finished benchmark into its run-directory stage folder."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from quantship import layout
from quantship.bench.driver import Progress, run_bench
from quantship.bench.models import BenchReport, BenchSettings, RequestRecord, Target
from quantship.bench.plots import latency_cdfs, throughput
from quantship.bench.prompts import Prompt
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


def bench_params(labels: list[str], api: str, settings: BenchSettings) -> dict:
    """What a bench/<tag> fingerprint is made of, besides its inputs: settings and endpoint labels, no URLs."""
    return {"settings": settings.model_dump(mode="json"), "targets": [{"label": label, "api": api} for label in labels]}


def bench_into_run_dir(
    rundir: RunDir,
    tag: str,
    targets: list[Target],
    prompts: list[Prompt],
    settings: BenchSettings,
    progress: Progress | None = None,
    server_metrics: bool = True,
    inputs: Mapping[str, str] | None = None,
) -> tuple[BenchReport, Path]:
    """Run a benchmark as the `bench/<tag>` stage: published whole, with its manifest, or not at all.

    Its fingerprint covers the settings, the endpoints' labels and `inputs` (what was served),
    not the URLs: a rerun against the same models on new ports is the same measurement.
    """
    import asyncio

    params = bench_params([t.label for t in targets], targets[0].api, settings)
    with rundir.stage(layout.bench(tag), params, inputs or {}) as stage:
        stage.extra["targets"] = [t.model_dump() for t in targets]
        report, records = asyncio.run(run_bench(targets, prompts, settings, progress, server_metrics))
        write_outputs(stage.staging, report, records)
    return report, rundir.stage_dir(layout.bench(tag))
