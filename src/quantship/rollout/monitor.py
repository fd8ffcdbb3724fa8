"""Window statistics per variant and the treatment-versus-control check.

The treatment is compared with the control over the same window of time, so a
change in traffic (longer prompts, a new client) moves both sides and does not
look like a regression. A window without enough responses on either side is
"insufficient": never a pass, never a breach.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from statistics import fmean

from quantship.rollout.assign import CONTROL, TREATMENT
from quantship.rollout.config import Thresholds
from quantship.rollout.quality import Observation

PASS = "pass"
BREACH = "breach"
INSUFFICIENT = "insufficient"
SIGNALS = ("circuit", "probe", "errors", "rejections", "repetition", "refusal", "length", "coherence", "truncation", "latency")


@dataclass(frozen=True)
class WindowStats:
    samples: int = 0  # every request, failed and rejected ones included
    errors: int = 0
    error_rate: float = 0.0
    rejections: int = 0  # 4xx answers of the backend
    rejection_rate: float = 0.0
    repetition_rate: float = 0.0
    refusal_rate: float = 0.0
    truncation_rate: float = 0.0
    mean_tokens: float = 0.0
    coherence: float = 0.0
    ttft_p50_s: float | None = None
    latency_p50_s: float | None = None


@dataclass(frozen=True)
class ProbeRound:
    """The latest known-answer probe results: prompt -> passed, per variant."""

    ts: float
    control: dict[str, bool]
    treatment: dict[str, bool]

    def regressions(self) -> list[str]:
        return [p for p, ok in self.treatment.items() if not ok and self.control.get(p, False)]


@dataclass(frozen=True)
class CheckResult:
    status: str
    reasons: list[str] = field(default_factory=list)
    signals: list[str] = field(default_factory=list)  # one short name per reason, for metrics
    control: WindowStats = field(default_factory=WindowStats)
    treatment: WindowStats = field(default_factory=WindowStats)

    def to_dict(self) -> dict:
        return {"status": self.status, "reasons": self.reasons, "control": asdict(self.control), "treatment": asdict(self.treatment)}


def _median(values: list[float]) -> float | None:
    if not values:
        return None
    values = sorted(values)
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def summarise(observations: Iterable[Observation]) -> WindowStats:
    obs = list(observations)
    if not obs:
        return WindowStats()
    good = [o for o in obs if o.ok]
    rejections = sum(1 for o in obs if o.rejected)
    errors = len(obs) - len(good) - rejections

    def rate(flag: str) -> float:
        return sum(1 for o in good if getattr(o, flag)) / len(good) if good else 0.0

    return WindowStats(
        samples=len(obs),
        errors=errors,
        error_rate=errors / len(obs),
        rejections=rejections,
        rejection_rate=rejections / len(obs),
        repetition_rate=rate("looping"),
        refusal_rate=rate("refusal"),
        truncation_rate=rate("truncated"),
        mean_tokens=fmean(o.tokens for o in good) if good else 0.0,
        coherence=fmean(o.coherence for o in good) if good else 0.0,
        ttft_p50_s=_median([o.ttft_s for o in good if o.ttft_s is not None]),
        latency_p50_s=_median([o.latency_s for o in good if o.latency_s is not None]),
    )


def check(
    observations: Iterable[Observation],
    thresholds: Thresholds,
    min_samples: int,
    treatment_circuit_open: bool = False,
    probes: ProbeRound | None = None,
) -> CheckResult:
    """One periodic check of the window: pass, breach (with reasons) or insufficient."""
    obs = list(observations)
    control = summarise(o for o in obs if o.variant == CONTROL)
    treatment = summarise(o for o in obs if o.variant == TREATMENT)
    found: list[tuple[str, str]] = []
    if treatment_circuit_open:
        found.append(("circuit", "treatment backend unavailable: circuit breaker open"))
    if probes is not None:
        found += [("probe", f"known-answer probe failed on treatment only: {p!r}") for p in probes.regressions()]
    enough = control.samples >= min_samples and treatment.samples >= min_samples
    if enough:
        found += _quality_breaches(control, treatment, thresholds)
    if found:
        return CheckResult(BREACH, [r for _, r in found], [s for s, _ in found], control, treatment)
    return CheckResult(PASS if enough else INSUFFICIENT, [], [], control, treatment)


def _quality_breaches(c: WindowStats, t: WindowStats, th: Thresholds) -> list[tuple[str, str]]:
    reasons = []
    if t.error_rate - c.error_rate > th.max_error_rate_increase:
        reasons.append(("errors", f"error rate {t.error_rate:.1%} vs control {c.error_rate:.1%}"))
    if t.rejection_rate - c.rejection_rate > th.max_rejection_rate_increase:
        reasons.append(("rejections", f"4xx rate {t.rejection_rate:.1%} vs control {c.rejection_rate:.1%}"))
    if t.samples - t.errors - t.rejections == 0:
        return reasons  # nothing answered: no quality to judge
    if t.repetition_rate > th.max_repetition_rate and t.repetition_rate - c.repetition_rate > th.repetition_margin:
        reasons.append(("repetition", f"repetition rate {t.repetition_rate:.1%} > {th.max_repetition_rate:.0%} (control {c.repetition_rate:.1%})"))
    if t.refusal_rate - c.refusal_rate > th.max_refusal_increase:
        reasons.append(("refusal", f"refusal rate {t.refusal_rate:.1%} vs control {c.refusal_rate:.1%}"))
    if c.mean_tokens > 0 and t.mean_tokens / c.mean_tokens < th.min_length_ratio:
        reasons.append(("length", f"length ratio {t.mean_tokens / c.mean_tokens:.2f} < {th.min_length_ratio:.2f}"))
    if c.coherence - t.coherence > th.max_coherence_drop:
        reasons.append(("coherence", f"coherence {t.coherence:.2f} vs control {c.coherence:.2f}"))
    if t.truncation_rate - c.truncation_rate > th.max_truncation_increase:
        reasons.append(("truncation", f"finish_reason=length {t.truncation_rate:.1%} vs control {c.truncation_rate:.1%}"))
    if th.max_latency_ratio and c.latency_p50_s and t.latency_p50_s:
        if t.latency_p50_s / c.latency_p50_s > th.max_latency_ratio:
            reasons.append(("latency", f"p50 latency ratio {t.latency_p50_s / c.latency_p50_s:.2f} > {th.max_latency_ratio}"))
    return reasons
