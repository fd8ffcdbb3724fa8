"""Is the treatment's rate really higher than the control's, or is it a small window's luck?

A rate threshold alone fires on noise: on 12 answers, 2 loops are 16.7%, over a 15% limit,
though a model that loops 6% of the time (the control's rate) does that often. Canary
analysis tools judge with a test (Kayenta: Mann-Whitney); for counts of events the exact
one is Fisher's: given how many events both variants had together, how likely is it that
the treatment got at least its share, if both had the same rate? Computed in log space
(lgamma), so windows of any size cost microseconds and nothing beyond the standard library.
"""

from __future__ import annotations

import math


def _log_comb(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def excess_p_value(treatment_hits: int, treatment_n: int, control_hits: int, control_n: int) -> float:
    """One-sided Fisher exact p-value of the treatment's rate being above the control's."""
    hits = treatment_hits + control_hits
    if treatment_n <= 0 or control_n <= 0 or hits == 0:
        return 1.0
    total = _log_comb(treatment_n + control_n, hits)
    top = min(treatment_n, hits)
    p = sum(math.exp(_log_comb(treatment_n, k) + _log_comb(control_n, hits - k) - total)
            for k in range(max(treatment_hits, hits - control_n), top + 1))
    return min(1.0, p)
