"""The target correction of `--target gate`: how many gate runs, and which build wins, when the gate disagrees.

The gate here is a scripted one (measured KL = factor x predicted), so the correction's
arithmetic is checked alone; tests/validate/test_gguf_allocate_tiny.py runs the real gate.
"""

from __future__ import annotations

from quantship.allocate.knapsack import Choice, Frontier
from quantship.allocate.search import gate_ratio, search_target

LIMIT = 0.05  # the gate's KL mean limit


def _frontier(tensors: int = 12) -> Frontier:
    # sensitivities spread over two orders of magnitude (same total whatever the count), four types each
    choices = {}
    for i in range(tensors):
        weight = 0.003 * (1.6 ** (i * 12 / tensors)) / tensors
        choices[f"t{i}"] = [Choice("q4", 450, weight), Choice("q5", 550, weight / 4), Choice("q6", 650, weight / 16),
                            Choice("q8", 850, weight / 250), Choice("bf16", 1600, 0.0)]
    return Frontier(choices)


def _run(factor: float, max_runs: int = 3, cap_bits=None, tensors: int = 12):
    record = {"runs": [], "gap": None}

    def trial(assignment, target):
        measured = factor * assignment.error
        check = {"value": measured, "threshold": LIMIT, "comparison": "<=", "passed": measured <= LIMIT}
        run = {"passed": measured <= LIMIT, "gate_ratio": gate_ratio({"checks": {"kl_mean": check}}),
               "bits": assignment.bits, "predicted": assignment.error, "target": target}
        record["runs"].append(run)
        return run

    search_target(_frontier(tensors), cap_bits, LIMIT, max_runs, trial, record, lambda a: a.bits / tensors, None)
    return record


def test_a_gate_that_measures_three_times_the_prediction_is_corrected_in_one_more_run():
    record = _run(factor=3.0)
    first, second = record["runs"][:2]
    assert not first["passed"] and first["target"] == LIMIT / 2
    assert second["passed"] and second["predicted"] <= LIMIT / 3 and second["bits"] > first["bits"]
    assert len(record["runs"]) <= 3


def test_a_pass_far_inside_the_limit_is_followed_by_a_smaller_build():
    record = _run(factor=1.0)
    first, second = record["runs"][:2]
    assert first["passed"] and first["gate_ratio"] < 0.8
    assert second["passed"] and second["bits"] < first["bits"] and second["gate_ratio"] >= first["gate_ratio"]


def test_a_pass_short_of_the_aim_uses_a_remaining_run_for_a_smaller_build():
    first_predicted = _frontier(60).cheapest(LIMIT / 2).error  # 60 tensors: a frontier fine enough to shrink by 5 %
    record = _run(factor=0.85 * LIMIT / first_predicted, tensors=60)  # the first build passes at 85 % of the limit
    first, second = record["runs"][:2]
    assert first["passed"] and 0.8 < first["gate_ratio"] < 0.9
    assert second["bits"] < first["bits"] and second["target"] > first["target"]


def test_the_run_budget_is_never_exceeded():
    record = _run(factor=30.0, max_runs=1)
    assert len(record["runs"]) == 1 and not record["runs"][0]["passed"]
    assert len(_run(factor=30.0, max_runs=3)["runs"]) <= 3


def test_a_target_out_of_reach_within_the_cap_builds_the_closest_and_names_the_gap():
    frontier = _frontier()
    cap_bits = frontier.smallest_bits + 400
    record = _run(factor=30.0, cap_bits=cap_bits)
    [only] = record["runs"]
    assert only["bits"] <= cap_bits and record["gap"]["closest_predicted_kl"] == only["predicted"]
    assert only["predicted"] == frontier.within(cap_bits).error


def test_top1_disagreement_counts_as_the_square_of_its_share_of_the_limit():
    checks = {"top1_agreement": {"value": 0.80, "threshold": 0.90, "comparison": ">=", "passed": False},
              "kl_mean": {"value": 0.01, "threshold": 0.05, "comparison": "<=", "passed": True}}
    assert abs(gate_ratio({"checks": checks}) - 4.0) < 1e-9  # (0.20 / 0.10) ** 2
