"""Measured decode throughput per format: the input `rerank` turns into an order.

Measurements come from a JSON file today (`plan --measurements FILE`, e.g. written by
a `quantship bench` run per variant). `plan --measure`, which benchmarks every
candidate format on this machine itself, needs the serve and bench stages.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError

from quantship.errors import InputError, NotAvailable
from quantship.plan.matrix import resolve_format


class Measurements(BaseModel):
    """Decode tokens/s per format on one machine, and how they were taken."""

    source: str
    tokens_per_s: dict[str, float] = Field(min_length=1)


def load_measurements(path: Path) -> Measurements:
    """Read `{"source": ..., "tokens_per_s": {format: tok/s}}` or a bare `{format: tok/s}`."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise InputError(f"measurements file {path} does not exist", "check the path") from error
    except json.JSONDecodeError as error:
        raise InputError(f"measurements file {path} is not JSON ({error})", "write {format: tokens_per_s}") from error
    if isinstance(raw, dict) and "tokens_per_s" not in raw:
        raw = {"source": str(path), "tokens_per_s": raw}
    try:
        measured = Measurements.model_validate(raw)
    except ValidationError as error:
        raise InputError(
            f"measurements file {path} is invalid ({error.errors()[0]['msg']})",
            'write {"tokens_per_s": {"bf16": 346, "w8a8-int8": 414}}',
        ) from error
    rates = {}
    for name, value in measured.tokens_per_s.items():
        if not value >= 0:
            raise InputError(f"measurements file {path}: {name} has {value} tokens/s", "give rates >= 0")
        rates[resolve_format(name)] = value
    return Measurements(source=measured.source, tokens_per_s=rates)


def measure_on_this_machine() -> Measurements:
    """Benchmark each candidate format here: pending until serve and bench land."""
    raise NotAvailable(
        "plan --measure (benchmark every format on this machine) is not wired to quantship serve/bench yet",
        "bench each variant and pass the figures with --measurements FILE (docs/plan.md)",
    )
