"""Thresholds -> verdicts. A check that errored or lacks data fails; nothing passes by default."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from quantship.errors import InputError


class Thresholds(BaseModel):
    """The gate's limits: quantship's defaults (docs/validate.md says why); override in YAML or on the command line."""

    model_config = ConfigDict(extra="forbid")
    max_perplexity_delta: float = Field(0.10, ge=0, description="Fail above this relative perplexity increase (variant/baseline - 1).")
    max_kl_mean: float = Field(0.05, ge=0, description="Fail above this mean KL, nats per scored position.")
    max_kl_p99: float = Field(0.75, ge=0, description="Fail above this 99th-percentile KL, nats.")
    min_top1_agreement: float = Field(0.90, ge=0, le=1, description="Fail below this same-top-token rate.")
    max_greedy_regressions: float = Field(
        0.10, ge=0, le=1, description="Fail above this share of references diverging outside the top-k."
    )
    max_probe_drop: float = Field(0.10, ge=0, le=1, description="Fail above this absolute drop of the probe pass rate.")
    max_long_context_delta: float = Field(0.10, ge=0, description="Fail above this relative perplexity increase on long windows.")
    max_task_relative_loss: float = Field(0.05, ge=0, le=1, description="Fail above this per-task 1 - variant acc / baseline acc.")
    # Served engine (`validate --url`) vs in-process figures: how far the server may drift from
    # what the gate measured in-process before the served engine counts as a different model.
    max_served_kl_mean_diff: float = Field(0.02, ge=0, description="|served kl_mean - in-process kl_mean|, nats.")
    max_served_perplexity_diff: float = Field(
        0.02, ge=0, description="|served - in-process| relative perplexity change."
    )
    max_served_top1_diff: float = Field(
        0.05, ge=0, le=1, description="|served - in-process| top-1 agreement (bf16 near-ties flip ~3%)."
    )

    @classmethod
    def load(cls, path: Path | None, overrides: dict[str, Any]) -> Thresholds:
        data: dict[str, Any] = {}
        if path is not None:
            try:
                data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
            except (OSError, yaml.YAMLError) as error:
                raise InputError(f"cannot read thresholds file {path} ({error})", "pass a readable YAML mapping") from None
            if not isinstance(data, dict):
                raise InputError(f"thresholds file {path} is not a mapping", "write `max_perplexity_delta: 0.1` style keys")
        data.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls(**data)
        except ValidationError as error:
            first = error.errors()[0]
            raise InputError(
                f"invalid threshold {'.'.join(map(str, first['loc']))}: {first['msg']}",
                f"use the keys {', '.join(cls.model_fields)} with non-negative numbers",
            ) from None


@dataclass
class CheckResult:
    """One measured check. `value` None means it could not be measured: a failure."""

    name: str
    value: float | None
    threshold: float
    comparison: str  # "<=" or ">=": how value must relate to threshold to pass
    unit: str = ""
    detail: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def passed(self) -> bool:
        if self.error is not None or self.value is None or self.value != self.value:  # NaN fails
            return False
        return self.value <= self.threshold if self.comparison == "<=" else self.value >= self.threshold

    def to_json(self) -> dict[str, Any]:
        """Strict JSON: a non-finite measurement is stored as null with the reason."""
        data = {**asdict(self), "passed": self.passed}
        if self.value is not None and not math.isfinite(self.value):
            data.update(value=None, error=self.error or f"measured value is {self.value}")
        return data


def errored(name: str, threshold: float, comparison: str, error: BaseException | str) -> CheckResult:
    text = error if isinstance(error, str) else f"{type(error).__name__}: {(str(error).splitlines() or [''])[0]}"
    return CheckResult(name, None, threshold, comparison, error=text)


def failed_checks(checks: list[CheckResult]) -> list[str]:
    return [c.name for c in checks if not c.passed]
