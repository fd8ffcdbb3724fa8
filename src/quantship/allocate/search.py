"""The target correction of `--target gate`: build, gate, correct the predicted-KL target, build again.

The first target is a share of the gate's KL limit. Each gate run gives the ratio
between what the gate measured (its binding check, in KL units) and its limit; the
next target is the build's predicted KL divided by that ratio, aimed a little inside.
A passing build far inside the limits is followed by a smaller one; the result is the
smallest build that passed. The builder and the gate are the caller's
(quantship.validate.mixed_precision), so this arithmetic is tested on its own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from quantship.allocate.knapsack import Assignment, Frontier

FIRST_TARGET_SHARE = 0.5  # first predicted-KL target, as a share of the gate's KL limit
# Aim this far inside the limit the correction predicts. A pass whose binding check reached the
# aim is the answer; one that stopped short is followed by a smaller build while gate runs remain
# (if that one fails, the pass is kept, so trying costs one run). A separate, lower stop (0.8)
# ended the search at a pass using 83 % of its top-1 limit on the demo model, 6.14 bits/weight,
# with two of its three runs unused (benchmarks/results/quality.json).
AIM = 0.9
# Checks that grow about linearly with KL; top-1 disagreement grows with its square root.
_LINEAR_CHECKS = ("perplexity", "kl_mean", "kl_p99", "long_context")
_DISCRETE_FAIL = 1.5  # a failing count-based check (greedy, probes, tasks): tighten by this much


def gate_ratio(result: dict[str, Any]) -> float:
    """How far the gate's binding check is from its limit, in KL units: > 1 fails, < 1 has room."""
    ratios = []
    for name, check in result["checks"].items():
        value, limit = check.get("value"), check.get("threshold")
        if value is None or limit is None:
            ratios.append(_DISCRETE_FAIL if not check.get("passed") else 1.0)
        elif name == "top1_agreement":
            ratios.append(((1 - value) / max(1 - limit, 1e-9)) ** 2)
        elif name in _LINEAR_CHECKS and limit > 0:
            ratios.append(max(value, 0.0) / limit)
        elif not check.get("passed"):
            ratios.append(_DISCRETE_FAIL)
    return max(ratios, default=1.0)


def search_target(
    frontier: Frontier, cap_bits: float | None, max_kl: float, max_runs: int,
    trial: Callable[[Assignment, float], dict[str, Any] | None], record: dict[str, Any],
    bits_per_weight: Callable[[Assignment], float], cap: float | None,
) -> None:
    """Target `gate`: build, gate, correct the predicted-KL target by the gate's ratio, until a pass close to the limit.

    `trial(assignment, target)` builds and gates one assignment and appends its run
    (with `passed` and `gate_ratio`) to record["runs"]; None when the build failed.
    """
    target = max_kl * FIRST_TARGET_SHARE
    built: set[tuple] = set()
    best_bits = float("inf")
    while len(record["runs"]) < max_runs:
        assignment = frontier.cheapest(target)
        if assignment is None or (cap_bits is not None and assignment.bits > cap_bits):
            closest = frontier.within(cap_bits if cap_bits is not None else float("inf"))
            record["gap"] = {
                "target_kl": target, "closest_predicted_kl": closest.error,
                "closest_bits_per_weight": round(bits_per_weight(closest), 4),
                "text": (f"no assignment within {cap} bits/weight predicts KL <= {target:.4g}; "
                         f"the closest predicts {closest.error:.4g}"),
            }
            assignment = closest
        signature = tuple(sorted(assignment.types.items()))
        if signature in built or assignment.bits >= best_bits:
            break  # the correction asks for nothing new
        built.add(signature)
        run = trial(assignment, target)
        if run is None or record["gap"] is not None:
            break
        ratio = run["gate_ratio"]
        if run["passed"]:
            best_bits = min(best_bits, assignment.bits)
            if ratio >= AIM:
                break
        target = assignment.error / ratio * AIM if ratio > 0 else target * 2
