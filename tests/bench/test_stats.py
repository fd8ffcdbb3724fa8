"""Statistics: exact percentiles, goodput with errors as misses, warm-up refused."""

from __future__ import annotations

import numpy as np
import pytest

from quantship.bench.compare import compare_levels
from quantship.bench.models import RequestRecord
from quantship.bench.stats import distribution, goodput, meets_slo, summarize


def record(ttft=0.1, e2e=1.0, tokens=10, error=None, phase="measure", itl=()):
    return RequestRecord(
        endpoint="a",
        level=1,
        phase=phase,
        start_s=0.0,
        ttft_s=ttft,
        e2e_s=e2e,
        output_tokens=tokens,
        error=error,
        itl_s=list(itl),
    )


def test_percentiles_are_exact_order_statistics():
    # 1..100 ms: linear interpolation between order statistics gives these exactly.
    dist = distribution([i / 1000 for i in range(1, 101)])
    assert dist.n == 100
    assert dist.p50 == pytest.approx(50.5)
    assert dist.p90 == pytest.approx(90.1)
    assert dist.p95 == pytest.approx(95.05)
    assert dist.p99 == pytest.approx(99.01)
    assert dist.mean == pytest.approx(50.5)
    assert (dist.min, dist.max) == pytest.approx((1.0, 100.0))


def test_percentiles_of_a_skewed_sample_are_not_bucketed():
    # One slow outlier among fast requests: p99 interpolates towards it, p50 ignores it.
    samples = [0.010] * 99 + [5.0]
    dist = distribution(samples)
    assert dist.p50 == pytest.approx(10.0)
    assert dist.p99 == pytest.approx(10.0 + 0.01 * (5000.0 - 10.0))
    assert dist.max == pytest.approx(5000.0)


def test_empty_sample_has_no_distribution():
    assert distribution([]) is None


def test_tpot_excludes_the_first_token():
    r = record(ttft=0.2, e2e=1.1, tokens=10)
    assert r.tpot_s == pytest.approx(0.1)
    assert record(tokens=1).tpot_s is None


def test_errors_are_slo_misses_and_stay_in_the_denominator():
    records = [record(ttft=0.05, e2e=0.5), record(ttft=0.05, e2e=0.5), record(error="http_500"), record(ttft=0.3)]
    result = goodput(records, duration_s=2.0, slo_ttft_ms=100, slo_e2e_ms=None)
    assert (result.met, result.total) == (2, 4)
    assert result.share == pytest.approx(0.5)
    assert result.good_requests_per_s == pytest.approx(1.0)
    assert not meets_slo(record(error="timeout", ttft=0.0, e2e=0.0), None, None)
    assert goodput(records, 2.0, None, None) is None


def test_e2e_slo_alone_and_both_slos():
    fast_first_slow_end = record(ttft=0.05, e2e=3.0)
    assert meets_slo(fast_first_slow_end, 100, None)
    assert not meets_slo(fast_first_slow_end, 100, 2000)
    assert not meets_slo(fast_first_slow_end, None, 2000)


def test_summary_counts_errors_and_divides_tokens_by_duration():
    records = [
        record(tokens=10, itl=[0.01] * 9),
        record(tokens=30, itl=[0.02] * 29),
        record(error="stream_cut", tokens=5),
    ]
    summary = summarize(records, endpoint="a", mode="concurrency", level=1, duration_s=4.0, slo_e2e_ms=2000)
    assert (summary.requests, summary.ok, summary.errors) == (3, 2, 1)
    assert summary.error_kinds == {"stream_cut": 1}
    assert summary.output_tokens == 40  # the failed request's tokens are not throughput
    assert summary.output_tokens_per_s == pytest.approx(10.0)
    assert summary.requests_per_s == pytest.approx(0.5)
    assert summary.itl_ms.n == 38
    assert summary.goodput.share == pytest.approx(2 / 3)


def test_summary_refuses_warmup_records():
    with pytest.raises(ValueError, match="warm-up"):
        summarize([record(phase="warmup")], endpoint="a", mode="concurrency", level=1, duration_s=1.0)


def test_side_by_side_ratios_are_compare_over_baseline():
    base = summarize(
        [record(ttft=0.2, e2e=2.0, tokens=20)] * 4, endpoint="a", mode="concurrency", level=4, duration_s=2.0
    )
    fast = summarize(
        [record(ttft=0.1, e2e=0.5, tokens=20)] * 4, endpoint="b", mode="concurrency", level=4, duration_s=1.0
    )
    (level,) = compare_levels([base], [fast])
    ratios = {r.metric: r.ratio for r in level.ratios}
    assert ratios["ttft_p50_ms"] == pytest.approx(0.5)
    assert ratios["e2e_p50_ms"] == pytest.approx(0.25)
    assert ratios["output_tokens_per_s"] == pytest.approx(2.0)
    assert ratios["goodput_share"] is None  # no SLO stated
    assert compare_levels([base], []) == []


def test_distribution_matches_numpy_on_random_data():
    values = np.random.default_rng(3).lognormal(size=257)
    dist = distribution(values.tolist())
    assert dist.p95 == pytest.approx(float(np.percentile(values * 1000, 95)))
