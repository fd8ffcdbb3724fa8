"""Side-by-side ratios: compare endpoint / baseline endpoint, level by level."""

from __future__ import annotations

from collections.abc import Callable

from quantship.bench.models import LevelComparison, LevelSummary, Ratio


def _pick(path: str) -> Callable[[LevelSummary], float | None]:
    head, _, tail = path.partition(".")

    def get(summary: LevelSummary) -> float | None:
        value = getattr(summary, head)
        if tail and value is not None:
            value = getattr(value, tail)
        return value

    return get


# (name in the report, where it lives in a LevelSummary); lower is better for latencies.
METRICS: tuple[tuple[str, Callable[[LevelSummary], float | None]], ...] = (
    ("ttft_p50_ms", _pick("ttft_ms.p50")),
    ("ttft_p99_ms", _pick("ttft_ms.p99")),
    ("itl_p50_ms", _pick("itl_ms.p50")),
    ("tpot_p50_ms", _pick("tpot_ms.p50")),
    ("e2e_p50_ms", _pick("e2e_ms.p50")),
    ("e2e_p99_ms", _pick("e2e_ms.p99")),
    ("output_tokens_per_s", _pick("output_tokens_per_s")),
    ("requests_per_s", _pick("requests_per_s")),
    ("goodput_share", _pick("goodput.share")),
)


def ratio(baseline: float | None, compare: float | None) -> float | None:
    if baseline is None or compare is None or baseline == 0:
        return None
    return compare / baseline


def compare_levels(baseline: list[LevelSummary], compare: list[LevelSummary]) -> list[LevelComparison]:
    """Ratios at every level both endpoints were measured at."""
    others = {s.level: s for s in compare}
    result = []
    for base in baseline:
        other = others.get(base.level)
        if other is None:
            continue
        ratios = []
        for name, get in METRICS:
            a, b = get(base), get(other)
            ratios.append(Ratio(metric=name, baseline=a, compare=b, ratio=ratio(a, b)))
        result.append(LevelComparison(level=base.level, ratios=ratios))
    return result
