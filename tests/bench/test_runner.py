"""Whole runs against real loopback servers: warm-up, ABBA side by side, rate mode,
and the cross-check against a server's Prometheus histograms."""

from __future__ import annotations

import asyncio
import gc
from itertools import groupby

import pytest
from prometheus_client import CollectorRegistry, Histogram, start_http_server

from quantship.bench.driver import block_plan, run_bench
from quantship.bench.prompts import builtin_prompts
from tests.support.bench_settings import settings, target_for
from tests.support.openai_stub import OpenAIStub, free_port


class Hooks:
    """Progress sink that lets a test act at phase changes and request completions."""

    def __init__(self, on_phase=None, on_done=None):
        self.on_phase, self.on_done, self.phases = on_phase, on_done, []

    def phase(self, name, total):
        self.phases.append((name, total))
        if self.on_phase:
            self.on_phase(name)

    def advance(self):
        if self.on_done:
            self.on_done()


def run(targets, progress=None, **changes):
    return asyncio.run(run_bench(targets, builtin_prompts(), settings(**changes), progress))


def test_block_plan_is_abba_with_the_same_prompts_for_both():
    blocks = block_plan(["a", "b"], count=10, rounds=3)
    assert [b.label for b in blocks] == ["a", "b", "b", "a", "a", "b"]
    assert [(b.first, b.count) for b in blocks if b.label == "a"] == [(0, 4), (4, 3), (7, 3)]
    assert [(b.first, b.count) for b in blocks if b.label == "b"] == [(0, 4), (4, 3), (7, 3)]
    assert [(b.label, b.count) for b in block_plan(["a"], 10, rounds=3)] == [("a", 10)]
    assert len(block_plan(["a", "b"], 1, rounds=4)) == 2


def test_warmup_requests_are_sent_but_not_measured():
    with OpenAIStub(mode="error", tokens=8) as stub:
        # Every warm-up request fails; the stub turns healthy when measuring starts.
        hooks = Hooks(on_phase=lambda name: name != "warm-up" and stub.set_mode("normal"))
        report, records = run([target_for(stub)], hooks, warmup=3, requests=5)
        assert stub.requests == 8
    (summary,) = report.summaries
    assert (summary.requests, summary.ok, summary.errors) == (5, 5, 0)
    assert [r.error for r in records if r.phase == "warmup"] == ["http_500"] * 3
    assert hooks.phases == [("warm-up", 3), ("concurrency 1", 5)]


def test_the_callers_heap_is_frozen_while_requests_are_timed_and_given_back_after():
    # A full collection of the caller's heap inside a request is timed as the server's latency.
    heap = [[] for _ in range(10_000)]  # what the caller holds before the run
    frozen_during = []
    with OpenAIStub(mode="normal", tokens=8) as stub:
        run([target_for(stub)], Hooks(on_done=lambda: frozen_during.append(gc.get_freeze_count())), requests=3)
        assert len(frozen_during) == 3 and min(frozen_during) >= len(heap)
        assert gc.get_freeze_count() == 0  # collectable again
        gc.freeze()
        try:
            own = gc.get_freeze_count()
            run([target_for(stub)], requests=1)
            assert 0 < gc.get_freeze_count() <= own  # a caller's own freeze is neither undone nor added to
        finally:
            gc.unfreeze()


def test_concurrency_sweep_reports_each_level():
    with OpenAIStub(mode="normal", tokens=8) as stub:
        report, records = run([target_for(stub)], levels=[1.0, 4.0], requests=8)
    assert [(s.level, s.ok, s.output_tokens) for s in report.summaries] == [(1.0, 8, 64), (4.0, 8, 64)]
    assert all(s.tokens_from_usage for s in report.summaries)
    assert {r.level for r in records} == {1.0, 4.0}


def test_errors_count_as_goodput_misses_in_a_run():
    with OpenAIStub(mode="normal", tokens=8) as stub:
        served = 0

        def flip():
            nonlocal served
            served += 1
            if served == 2:
                stub.set_mode("error")  # the last two of four requests fail

        report, _ = run([target_for(stub)], Hooks(on_done=flip), requests=4, slo_ttft_ms=60_000)
    (summary,) = report.summaries
    assert summary.error_kinds == {"http_500": 2}
    assert (summary.goodput.met, summary.goodput.total, summary.goodput.share) == (2, 4, 0.5)


def test_side_by_side_runs_in_abba_turns_and_reports_ratios():
    with (
        OpenAIStub(mode="slow", first_token_delay_s=0.05, token_delay_s=0.04, tokens=8, model="bf16") as a,
        OpenAIStub(mode="slow", first_token_delay_s=0.05, token_delay_s=0.01, tokens=8, model="w4") as b,
    ):
        report, records = run([target_for(a, "bf16"), target_for(b, "w4")], requests=4, rounds=2)
        assert (a.requests, b.requests) == (4, 4)
    measured = sorted((r for r in records if r.phase == "measure"), key=lambda r: r.start_s)
    assert [label for label, _ in groupby(r.endpoint for r in measured)] == ["bf16", "w4", "bf16"]
    (level,) = report.comparisons
    ratios = {r.metric: r for r in level.ratios}
    # The compare endpoint streams 4x faster: its time per token is well under the baseline's.
    assert ratios["tpot_p50_ms"].ratio < 0.6
    assert ratios["output_tokens_per_s"].ratio > 1.3
    assert ratios["tpot_p50_ms"].baseline == next(s for s in report.summaries if s.endpoint == "bf16").tpot_ms.p50


def test_rate_mode_sends_every_request_at_its_scheduled_time():
    with OpenAIStub(mode="normal", tokens=4) as stub:
        report, records = run([target_for(stub)], mode="rate", levels=[20.0], requests=12, seed=5)
    (summary,) = report.summaries
    assert summary.mode == "rate" and summary.ok == 12
    starts = sorted(records, key=lambda r: r.scheduled_s)
    first = starts[0].start_s
    # Never early: each request left at or after its planned arrival.
    assert all(r.start_s - first >= r.scheduled_s - 1e-3 for r in starts)


def test_no_server_histograms_means_no_cross_check(stub):
    report, _ = run([target_for(stub)])
    assert report.summaries[0].server_checks == []


@pytest.mark.parametrize("scale, agree", [(1.0, True), (2.0, False)])
def test_cross_check_against_a_prometheus_histogram(scale, agree):
    """A real Prometheus exporter records what a server measures for each request it
    finished (the stub's configured delays); the client's means must agree with it."""
    first, gap, tokens = 0.5, 0.02, 6
    registry = CollectorRegistry()
    labels = ["model_name"]
    ttft = Histogram("vllm:time_to_first_token_seconds", "TTFT", labels, registry=registry)
    e2e = Histogram("vllm:e2e_request_latency_seconds", "e2e", labels, registry=registry)
    other = Histogram("vllm:e2e_request_latency_seconds_other", "another model", labels, registry=registry)
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)

    def server_records_request():
        ttft.labels("stub-model").observe(first * scale)
        e2e.labels("stub-model").observe((first + (tokens - 1) * gap) * scale)
        e2e.labels("another-model").observe(100.0)  # a second model on the server: filtered out
        other.labels("stub-model").observe(1.0)

    try:
        with OpenAIStub(mode="slow", first_token_delay_s=first, token_delay_s=gap, tokens=tokens) as stub:
            target = target_for(stub).model_copy(update={"metrics_url": f"http://127.0.0.1:{port}/metrics"})
            # Warm-up requests are counted by the server too, but outside the measured window.
            report, _ = run([target], Hooks(on_done=server_records_request), warmup=2, requests=4, max_tokens=tokens)
    finally:
        server.shutdown()
    checks = {c.metric: c for c in report.summaries[0].server_checks}
    assert set(checks) == {"ttft", "e2e"}
    for check in checks.values():
        assert (check.client_n, check.server_n) == (4, 4)
        assert check.agree is agree
    assert checks["ttft"].server_mean_ms == pytest.approx(first * scale * 1000)
    if agree:
        assert abs(checks["e2e"].relative_diff) <= 0.10
    else:
        assert checks["e2e"].relative_diff > 0.5
