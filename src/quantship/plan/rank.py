"""Which format to recommend first: priors per hardware, replaced by measurements.

The fastest format depends on the machine, so a measured tokens-per-second figure
always outranks a prior (on CPU the priors are hand-entered rates, formats.yaml's
`cpu_priors`). `rerank` is
the hook `plan --measure` feeds: formats it measured come first, fastest first; the
rest keep their prior order behind them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pydantic import BaseModel

from quantship.formats.hardware import HardwareProfile
from quantship.formats.matrix import load_matrix


class Ranking(BaseModel):
    """An order of formats and what it rests on."""

    order: list[str]
    basis: str                                 # "prior" or "measured"
    source: str
    tokens_per_s: dict[str, float] = {}        # the rates the order rests on (priors or measurements, per basis)

    def position(self, format_id: str) -> int:
        return self.order.index(format_id) if format_id in self.order else len(self.order)


def prior_class(hardware: HardwareProfile) -> str:
    if hardware.kind == "cpu":
        return "cpu"
    return "gpu-fp8" if hardware.compute_capability >= 8.9 else "gpu-int8"


def regime(concurrency: int) -> str:
    """Decode is bandwidth bound at low concurrency, compute bound at high."""
    return "latency" if concurrency <= load_matrix().latency_max_concurrency else "throughput"


def prior_ranking(hardware: HardwareProfile, concurrency: int) -> Ranking:
    """The shipped order for this hardware; on CPU the shipped throughput priors decide."""
    matrix = load_matrix()
    klass, mode = prior_class(hardware), regime(concurrency)
    order = list(getattr(matrix.priors[klass], mode))
    if klass == "cpu":
        priors = matrix.cpu_priors
        ranked = rerank(order, priors.tokens_per_s, f"shipped priors: {priors.source}")
        return ranked.model_copy(update={"basis": "prior"})
    return Ranking(order=order, basis="prior", source=f"{klass} priors, {mode} regime (concurrency {concurrency})")


def rerank(order: Sequence[str], tokens_per_s: Mapping[str, float], source: str) -> Ranking:
    """Measured formats first by decode tokens/s (fastest first), then the others."""
    if bad := {f: v for f, v in tokens_per_s.items() if not v >= 0}:
        raise ValueError(f"measured throughput must be >= 0 tokens/s: {bad}")
    prior = {f: i for i, f in enumerate(order)}
    measured = sorted(tokens_per_s, key=lambda f: (-tokens_per_s[f], prior.get(f, len(prior))))
    rest = [f for f in order if f not in tokens_per_s]
    return Ranking(order=measured + rest, basis="measured", source=source, tokens_per_s=dict(tokens_per_s))
