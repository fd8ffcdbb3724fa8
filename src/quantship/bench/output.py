"""Writes a finished benchmark into its run-directory stage folder."""

from __future__ import annotations

import json
from pathlib import Path

from quantship.bench.models import BenchReport, RequestRecord
from quantship.bench.plots import latency_cdfs, throughput
from quantship.rundir import atomic_write_json, atomic_write_text

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
