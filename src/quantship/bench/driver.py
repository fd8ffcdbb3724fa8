"""Drives a whole benchmark: warm-up, then every load level, one or two endpoints.

Two endpoints are measured in turns, not at once, so they never compete for the
same CPU or GPU: each level is split into rounds run in ABBA order (A B, then
B A, ...), which cancels a linear drift in machine speed, and both endpoints get
the same prompts and, in rate mode, the same arrival times.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

import httpx

from quantship.bench.client import request_body, send_request
from quantship.bench.compare import compare_levels
from quantship.bench.load import fixed_concurrency, poisson_arrivals, poisson_offsets
from quantship.bench.models import BenchReport, BenchSettings, RequestRecord, ServerCheck, Target
from quantship.bench.prom import HISTOGRAMS, ServerMetrics, compare_means
from quantship.bench.prompts import Prompt
from quantship.bench.stats import summarize


class Progress(Protocol):
    def phase(self, name: str, total: int) -> None: ...

    def advance(self) -> None: ...


class _Quiet:
    def phase(self, name: str, total: int) -> None:
        pass

    def advance(self) -> None:
        pass


@dataclass(frozen=True)
class Block:
    """A run of `count` requests against one endpoint, prompts from `first` on."""

    round: int
    label: str
    first: int
    count: int


def block_plan(labels: list[str], count: int, rounds: int) -> list[Block]:
    """ABBA order: round r runs the endpoints forwards when r is even, backwards when odd."""
    rounds = max(1, min(rounds, count)) if len(labels) > 1 else 1
    sizes = [count // rounds + (1 if r < count % rounds else 0) for r in range(rounds)]
    blocks, first = [], 0
    for r, size in enumerate(sizes):
        order = labels if r % 2 == 0 else list(reversed(labels))
        blocks += [Block(r, label, first, size) for label in order]
        first += size
    return blocks


async def run_bench(
    targets: list[Target],
    prompts: list[Prompt],
    settings: BenchSettings,
    progress: Progress | None = None,
    server_metrics: bool = True,
) -> tuple[BenchReport, list[RequestRecord]]:
    """Run the benchmark; returns the report and every record (warm-up included)."""
    progress = progress or _Quiet()
    clock_zero = time.perf_counter()
    records: list[RequestRecord] = []
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    timeout = httpx.Timeout(settings.timeout_s, connect=10.0)
    with caller_heap_frozen():
        async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:
            probes = await _probes(client, targets) if server_metrics else {}
            by_label = {t.label: t for t in targets}
            cursor = 0

            def sender(target: Target, first: int, level: float, phase: str):
                async def send(index: int, scheduled: float | None) -> RequestRecord:
                    prompt = prompts[(first + index) % len(prompts)]
                    body = request_body(
                        target,
                        prompt,
                        max_tokens=settings.max_tokens,
                        ignore_eos=settings.ignore_eos,
                        temperature=settings.temperature,
                    )
                    record = await send_request(
                        client,
                        target,
                        body,
                        clock_zero=clock_zero,
                        level=level,
                        phase=phase,
                        timeout_s=settings.timeout_s,
                        scheduled_s=scheduled,
                    )
                    progress.advance()
                    return record

                return send

            if settings.warmup:
                progress.phase("warm-up", settings.warmup * len(targets))
                for target in targets:
                    warm, _ = await fixed_concurrency(
                        sender(target, cursor, 0.0, "warmup"),
                        settings.warmup,
                        min(settings.warmup, _warmup_width(settings)),
                    )
                    records += warm
                cursor += settings.warmup

            summaries = []
            for level_index, level in enumerate(settings.levels):
                progress.phase(f"{settings.mode} {level:g}", settings.requests * len(targets))
                level_records: dict[str, list[RequestRecord]] = {t.label: [] for t in targets}
                durations = dict.fromkeys(level_records, 0.0)
                for probe in probes.values():
                    probe.reset()
                for block in block_plan(list(by_label), settings.requests, settings.rounds):
                    target = by_label[block.label]
                    send = sender(target, cursor + block.first, level, "measure")
                    probe = probes.get(block.label)
                    if probe is not None:
                        await probe.begin(client)
                    if settings.mode == "concurrency":
                        got, took = await fixed_concurrency(send, block.count, int(level))
                    else:
                        offsets = poisson_offsets(level, block.count, settings.seed + 1000 * level_index + block.round)
                        got, took = await poisson_arrivals(send, offsets, settings.max_concurrency)
                    if probe is not None:
                        await probe.end(client, expected=sum(r.ok for r in got))
                    level_records[block.label] += got
                    durations[block.label] += took
                cursor += settings.requests
                for target in targets:
                    got = level_records[target.label]
                    summary = summarize(
                        got,
                        endpoint=target.label,
                        mode=settings.mode,
                        level=level,
                        duration_s=durations[target.label],
                        slo_ttft_ms=settings.slo_ttft_ms,
                        slo_e2e_ms=settings.slo_e2e_ms,
                    )
                    probe = probes.get(target.label)
                    if probe is not None:
                        summary.server_checks = _checks(got, probe)
                    summaries.append(summary)
                    records += got
    report = BenchReport(settings=settings, targets=targets, summaries=summaries)
    if len(targets) == 2:
        base, other = (t.label for t in targets)
        report.comparisons = compare_levels(
            [s for s in summaries if s.endpoint == base], [s for s in summaries if s.endpoint == other]
        )
    return report, records


@contextmanager
def caller_heap_frozen() -> Iterator[None]:
    """Keep the garbage collector off the caller's heap while requests are timed.

    A full collection walks every object the process tracks; in a process that has
    imported torch and transformers (the pipeline, a test run) that is a sizeable part
    of a second spent inside whichever request is in flight, and one such pause makes
    the client's mean TTFT several times the server's. The objects alive now move to
    the permanent generation for the run and come back afterwards; a caller that froze
    its own heap keeps it as it was.
    """
    if gc.get_freeze_count():
        yield
        return
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _warmup_width(settings: BenchSettings) -> int:
    if settings.mode == "concurrency":
        return max(1, int(max(settings.levels)))
    return settings.max_concurrency or 1


async def _probes(client: httpx.AsyncClient, targets: list[Target]) -> dict[str, ServerMetrics]:
    """A metrics probe for each endpoint whose /metrics has the latency histograms."""
    probes = {}
    for target in targets:
        probe = ServerMetrics(target.prometheus_url, target.model)
        if await probe.available(client):
            probes[target.label] = probe
    return probes


def _checks(records: list[RequestRecord], probe: ServerMetrics) -> list[ServerCheck]:
    good = [r for r in records if r.ok]
    samples = {
        "ttft": [r.ttft_s for r in good if r.ttft_s is not None],
        "e2e": [r.e2e_s for r in good if r.e2e_s is not None],
    }
    return [
        compare_means(metric, samples[metric], probe.window.get(name))
        for metric, name in HISTOGRAMS.items()
        if name in probe.window
    ]
