"""Multiple-choice knapsack over tensors: one type per tensor, sizes add, predicted errors add.

Solved exactly by dynamic programming over a discretized size axis. Each choice's size
is rounded *up* to the grid, so an assignment the solver says fits a budget does fit
it. The grid step is a quarter of the smallest size difference between two choices of
one tensor (so rounding never makes a small upgrade look several times dearer), coarser
only when the axis from the smallest model to `max_bits` would exceed `max_steps`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Choice:
    type: str
    bits: float  # storage bits of the whole tensor at this type
    error: float  # predicted KL contribution, nats


@dataclass(frozen=True)
class Assignment:
    types: dict[str, str]  # tensor -> chosen type
    bits: float  # sum of the chosen choices' bits
    error: float  # sum of their predicted errors


class Frontier:
    """Least predicted error at every size, for one set of per-tensor choices."""

    def __init__(self, choices: dict[str, list[Choice]], max_bits: float | None = None, max_steps: int = 200_000) -> None:
        if not choices or any(not options for options in choices.values()):
            raise ValueError("every tensor needs at least one choice")
        self.names = list(choices)
        self.choices = [sorted(choices[n], key=lambda c: c.bits) for n in self.names]
        low = sum(c[0].bits for c in self.choices)
        high = sum(max(x.bits for x in c) for c in self.choices)
        limit = high if max_bits is None else max(low, min(high, max_bits))
        self.low = low
        increments = [b.bits - a.bits for c in self.choices for a, b in zip(c, c[1:], strict=False) if b.bits > a.bits]
        self.step = max(min(increments, default=1.0) / 4, (limit - low) / max_steps, 1e-9)
        extra = [[math.ceil((x.bits - c[0].bits) / self.step - 1e-9) for x in c] for c in self.choices]
        size = int(math.floor((limit - low) / self.step + 1e-9)) + 1
        best = np.zeros(size)
        best[1:] = np.inf
        self.picks = np.zeros((len(self.choices), size), dtype=np.int16)
        for t, (options, steps) in enumerate(zip(self.choices, extra, strict=True)):
            new = np.full(size, np.inf)
            pick = np.zeros(size, dtype=np.int16)
            for index, (choice, shift) in enumerate(zip(options, steps, strict=True)):
                if shift >= size:
                    continue  # does not fit under max_bits together with the rest at their smallest
                shifted = np.full(size, np.inf)
                shifted[shift:] = best[: size - shift] + choice.error
                better = shifted < new
                new[better] = shifted[better]
                pick[better] = index
            best, self.picks[t] = new, pick
        # best[k]: least error using exactly k extra steps; make it "at most k" (monotone)
        self.argbest = np.zeros(size, dtype=np.int64)
        running, where = np.inf, 0
        for k in range(size):
            if best[k] < running:
                running, where = best[k], k
            self.argbest[k] = where
        self.best = best
        self.extra = extra

    @property
    def smallest_bits(self) -> float:
        return self.low

    def within(self, bits: float) -> Assignment | None:
        """The least-error assignment whose size is at most `bits`; None when even the smallest does not fit."""
        if bits < self.low - 1e-6:
            return None
        k = min(int(math.floor((bits - self.low) / self.step + 1e-9)), len(self.best) - 1)
        return self._trace(int(self.argbest[k]))

    def cheapest(self, max_error: float) -> Assignment | None:
        """The smallest assignment whose predicted error is at most `max_error`; None when none is."""
        feasible = np.nonzero(self.best <= max_error + 1e-15)[0]
        return self._trace(int(feasible[0])) if feasible.size else None

    def _trace(self, k: int) -> Assignment:
        types, bits, error = {}, 0.0, 0.0
        for t in range(len(self.choices) - 1, -1, -1):
            choice = self.choices[t][int(self.picks[t, k])]
            types[self.names[t]] = choice.type
            bits += choice.bits
            error += choice.error
            k -= self.extra[t][int(self.picks[t, k])]
        assert k == 0, "the traceback must end at zero extra steps"
        return Assignment(dict(reversed(list(types.items()))), bits, error)
