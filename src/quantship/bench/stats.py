"""Pure statistics over request records: exact percentiles, throughput, goodput.

Percentiles come from the raw samples (linear interpolation between order
statistics, numpy's default), never from histogram buckets, so they can be checked
against the server's own histograms instead of sharing their approximation.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from quantship.bench.models import Distribution, Goodput, LevelSummary, Mode, RequestRecord

PERCENTILES = (50, 90, 95, 99)


def distribution(samples_s: Sequence[float]) -> Distribution | None:
    """Exact order statistics of samples given in seconds, reported in ms."""
    if len(samples_s) == 0:
        return None
    values = np.asarray(samples_s, dtype=float) * 1000.0
    p50, p90, p95, p99 = np.percentile(values, PERCENTILES)
    return Distribution(
        n=int(values.size),
        mean=float(values.mean()),
        p50=float(p50),
        p90=float(p90),
        p95=float(p95),
        p99=float(p99),
        min=float(values.min()),
        max=float(values.max()),
    )


def meets_slo(record: RequestRecord, slo_ttft_ms: float | None, slo_e2e_ms: float | None) -> bool:
    """A request is good when it succeeded and met every target that was stated."""
    if not record.ok:
        return False
    if slo_ttft_ms is not None and (record.ttft_s is None or record.ttft_s * 1000.0 > slo_ttft_ms):
        return False
    if slo_e2e_ms is not None and (record.e2e_s is None or record.e2e_s * 1000.0 > slo_e2e_ms):
        return False
    return True


def goodput(
    records: Sequence[RequestRecord], duration_s: float, slo_ttft_ms: float | None, slo_e2e_ms: float | None
) -> Goodput | None:
    if slo_ttft_ms is None and slo_e2e_ms is None:
        return None
    met = sum(meets_slo(r, slo_ttft_ms, slo_e2e_ms) for r in records)
    total = len(records)
    return Goodput(
        slo_ttft_ms=slo_ttft_ms,
        slo_e2e_ms=slo_e2e_ms,
        met=met,
        total=total,
        share=met / total if total else 0.0,
        good_requests_per_s=met / duration_s if duration_s > 0 else 0.0,
    )


def summarize(
    records: Sequence[RequestRecord],
    *,
    endpoint: str,
    mode: Mode,
    level: float,
    duration_s: float,
    slo_ttft_ms: float | None = None,
    slo_e2e_ms: float | None = None,
) -> LevelSummary:
    """One level's summary from its measured records (warm-up records are refused).

    `duration_s` is the wall time the measured requests took (the sum of the
    endpoint's blocks when two endpoints are interleaved); throughput divides by it.
    """
    if any(r.phase != "measure" for r in records):
        raise ValueError("warm-up records must not be summarised")
    good = [r for r in records if r.ok]
    tokens = sum(r.output_tokens for r in good)
    itl = [gap for r in good for gap in r.itl_s]
    return LevelSummary(
        endpoint=endpoint,
        mode=mode,
        level=level,
        requests=len(records),
        ok=len(good),
        errors=len(records) - len(good),
        error_kinds=dict(Counter(r.error for r in records if r.error is not None)),
        duration_s=duration_s,
        ttft_ms=distribution([r.ttft_s for r in good if r.ttft_s is not None]),
        itl_ms=distribution(itl),
        tpot_ms=distribution([t for r in good if (t := r.tpot_s) is not None]),
        e2e_ms=distribution([r.e2e_s for r in good if r.e2e_s is not None]),
        output_tokens=tokens,
        output_tokens_per_s=tokens / duration_s if duration_s > 0 else 0.0,
        requests_per_s=len(good) / duration_s if duration_s > 0 else 0.0,
        tokens_from_usage=bool(good) and all(r.tokens_from == "usage" for r in good),
        goodput=goodput(records, duration_s, slo_ttft_ms, slo_e2e_ms),
    )
