"""The multiple-choice knapsack: exact on cases solved by hand and by brute force."""

from __future__ import annotations

import itertools
import random

import pytest

from quantship.allocate.knapsack import Choice, Frontier


def _brute(choices, budget=None, max_error=None):
    best = None
    for combo in itertools.product(*choices.values()):
        bits, error = sum(c.bits for c in combo), sum(c.error for c in combo)
        if budget is not None and bits <= budget and (best is None or error < best[1]):
            best = (bits, error)
        if max_error is not None and error <= max_error and (best is None or bits < best[0]):
            best = (bits, error)
    return best


HAND = {
    # attention is sensitive, the MLP is not: the optimum spends the bits on attention
    "attn": [Choice("q4", 400, 0.30), Choice("q5", 500, 0.10), Choice("q8", 800, 0.01)],
    "mlp": [Choice("q4", 1200, 0.05), Choice("q5", 1500, 0.03), Choice("q8", 2400, 0.002)],
}


def test_a_budget_goes_to_the_sensitive_tensor_first():
    frontier = Frontier(HAND)
    # 1700 bits: attn q5 + mlp q4 (0.15) beats attn q4 + mlp q5 (0.33)
    assert frontier.within(1700).types == {"attn": "q5", "mlp": "q4"}
    # 2000 bits: attn q8 + mlp q4 = 0.06, the best that fits
    chosen = frontier.within(2000)
    assert chosen.types == {"attn": "q8", "mlp": "q4"} and chosen.bits == 2000 and chosen.error == pytest.approx(0.06)
    assert frontier.within(1599) is None  # the smallest assignment needs 1600


def test_the_cheapest_assignment_meeting_a_target():
    frontier = Frontier(HAND)
    assert frontier.cheapest(0.2).types == {"attn": "q5", "mlp": "q4"}  # 1700 bits, 0.15
    assert frontier.cheapest(0.05).types == {"attn": "q8", "mlp": "q5"}  # 2300 bits, 0.04 (q8+q4 = 0.06 misses)
    assert frontier.cheapest(0.001) is None  # q8 everywhere predicts 0.012


@pytest.mark.parametrize("seed", range(5))
def test_matches_brute_force_on_random_instances(seed):
    rng = random.Random(seed)
    choices = {
        f"t{i}": [Choice(f"c{j}", rng.choice([32, 64, 96, 128, 160]) * (j + 1), rng.uniform(0, 1) / (j + 1)) for j in range(3)]
        for i in range(6)
    }
    frontier = Frontier(choices)
    for budget in (sum(min(c.bits for c in v) for v in choices.values()) + extra for extra in (0, 100, 300, 700)):
        got = frontier.within(budget)
        want = _brute(choices, budget=budget)
        assert got.bits <= budget and got.error == pytest.approx(want[1])
    for target in (0.5, 1.0, 2.0):
        got, want = frontier.cheapest(target), _brute(choices, max_error=target)
        if want is None:
            assert got is None
        else:
            assert got.error <= target + 1e-12 and got.bits == pytest.approx(want[0])


def test_a_coarse_grid_never_breaks_a_budget():
    """Sizes round up to the grid: what the solver says fits, fits."""
    choices = {f"t{i}": [Choice("a", 100 + i, 1.0), Choice("b", 137 + 3 * i, 0.1)] for i in range(40)}
    frontier = Frontier(choices, max_steps=16)
    for budget in range(4100, 5800, 97):
        chosen = frontier.within(budget)
        assert chosen is None or chosen.bits <= budget
