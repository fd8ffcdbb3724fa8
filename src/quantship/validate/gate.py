"""Thresholds -> verdicts. A check that errored or lacks data fails; nothing passes by default.

The thresholds themselves are the validate stage's options (`quantship.options.Thresholds`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

# Prompt log-probabilities per position the served gate asks a vLLM server for (vLLM allows 20
# unless launched with --max-logprobs; serve launches it with this many).
SERVED_TOPK = 64


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
