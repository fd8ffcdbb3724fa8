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
from quantship.rollout.stats import excess_p_value

PASS = "pass"
BREACH = "breach"
INSUFFICIENT = "insufficient"
DISABLED = "disabled"  # the live KL when the control cannot score (judge.py)
PAIRED, CROSS_ENTROPY = "paired", "cross-entropy"  # how the live KL was estimated (judge.py)
SIGNALS = (
    "circuit", "probe", "errors", "rejections", "repetition", "refusal", "length", "coherence", "truncation", "latency",
    "live_kl",
)


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
    scored: int = 0  # answers the control judged (live KL)
    control_nll: float | None = None  # the control's mean negative log-likelihood per token of those answers
    paired: int = 0  # judged answers that came with the answering model's own log-probabilities
    paired_kl: float | None = None  # mean log q - log p per token over those: the paired KL estimate


@dataclass(frozen=True)
class LiveKLResult:
    """The live-KL part of a check: disabled, insufficient, pass or breach, and the estimate."""

    status: str = DISABLED
    value: float | None = None  # nats/token, treatment minus control
    method: str | None = None  # PAIRED (treatment's own log-probabilities) or CROSS_ENTROPY (judge.py)


@dataclass(frozen=True)
class ProbeRound:
    """The latest known-answer probe results: prompt -> passed, per variant."""

    ts: float
    control: dict[str, bool]
    treatment: dict[str, bool]

    def regressions(self) -> list[str]:
        return [p for p, ok in self.treatment.items() if not ok and self.control.get(p, False)]


@dataclass(frozen=True)
class MonitorCheck:
    status: str
    reasons: list[str] = field(default_factory=list)
    signals: list[str] = field(default_factory=list)  # one short name per reason, for metrics
    control: WindowStats = field(default_factory=WindowStats)
    treatment: WindowStats = field(default_factory=WindowStats)
    live_kl: LiveKLResult = field(default_factory=LiveKLResult)

    def to_dict(self) -> dict:
        return {
            "status": self.status, "reasons": self.reasons, "control": asdict(self.control),
            "treatment": asdict(self.treatment), "live_kl": asdict(self.live_kl),
        }


def _median(values: list[float]) -> float | None:
    if not values:
        return None
    values = sorted(values)
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def summarise(observations: Iterable[Observation]) -> WindowStats:
    everything = list(observations)
    obs = [o for o in everything if not o.scored_tokens]
    scores = [o for o in everything if o.scored_tokens]
    judged = sum(o.scored_tokens for o in scores)
    control_nll = sum(o.scored_nll for o in scores) / judged if judged else None
    paired = [o for o in scores if o.scored_own_nll is not None]
    paired_tokens = sum(o.scored_tokens for o in paired)
    paired_kl = sum(o.scored_nll - o.scored_own_nll for o in paired) / paired_tokens if paired_tokens else None
    judge = {"scored": len(scores), "control_nll": control_nll, "paired": len(paired), "paired_kl": paired_kl}
    if not obs:
        return WindowStats(**judge)
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
        **judge,
    )


def check(
    observations: Iterable[Observation],
    thresholds: Thresholds,
    min_samples: int,
    treatment_circuit_open: bool = False,
    probes: ProbeRound | None = None,
    live_kl_min_samples: int | None = None,
) -> MonitorCheck:
    """One periodic check of the window: pass, breach (with reasons) or insufficient.

    `live_kl_min_samples` None means the control cannot judge answers (live KL disabled);
    otherwise too few scores make the whole check insufficient, never a pass.
    """
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
    kl = _live_kl(control, treatment, thresholds.max_live_kl, live_kl_min_samples)
    if kl.status == BREACH:
        found.append(("live_kl", _live_kl_reason(kl, thresholds.max_live_kl, control, treatment)))
    if found:
        return MonitorCheck(BREACH, [r for _, r in found], [s for s, _ in found], control, treatment, kl)
    # With the judge on, quality is unproven until it has enough scores: no pass, so no promotion.
    judged = kl.status != INSUFFICIENT
    return MonitorCheck(PASS if enough and judged else INSUFFICIENT, [], [], control, treatment, kl)


def _live_kl(c: WindowStats, t: WindowStats, limit: float | None, min_samples: int | None) -> LiveKLResult:
    """Paired when enough treatment answers carried their own log-probabilities, else the cross-entropy gap.

    Judged alone it never passes or breaches on too few scores.
    """
    if min_samples is None or limit is None:
        return LiveKLResult(DISABLED)
    if t.paired >= min_samples:
        value, method = t.paired_kl, PAIRED
    elif c.scored >= min_samples and t.scored >= min_samples:
        value, method = t.control_nll - c.control_nll, CROSS_ENTROPY
    else:
        return LiveKLResult(INSUFFICIENT)
    return LiveKLResult(BREACH if value > limit else PASS, value, method)


def _live_kl_reason(kl: LiveKLResult, limit: float, c: WindowStats, t: WindowStats) -> str:
    head = f"live KL {kl.value:.3f} nats/token > {limit}: "
    if kl.method == PAIRED:
        return head + f"mean log q - log p of {t.paired} treatment answers (its own log-probabilities vs the control's)"
    return head + (f"control cross-entropy of treatment answers {t.control_nll:.3f} vs of its own {c.control_nll:.3f} "
                   f"({t.scored} vs {c.scored} judged)")


def _answered(w: WindowStats) -> int:
    return w.samples - w.errors - w.rejections


def _more_often(t_rate: float, t_n: int, c_rate: float, c_n: int, alpha: float) -> bool:
    """The treatment's rate is above the control's beyond a small window's luck (stats.py)."""
    return excess_p_value(round(t_rate * t_n), t_n, round(c_rate * c_n), c_n) < alpha


def _quality_breaches(c: WindowStats, t: WindowStats, th: Thresholds) -> list[tuple[str, str]]:
    """Each rate signal needs its margin and significance (th.significance); means need their margin."""
    reasons = []
    alpha = th.significance

    def per_request(t_rate: float, c_rate: float) -> bool:
        return _more_often(t_rate, t.samples, c_rate, c.samples, alpha)

    def per_answer(t_rate: float, c_rate: float) -> bool:
        return _more_often(t_rate, _answered(t), c_rate, _answered(c), alpha)

    if t.error_rate - c.error_rate > th.max_error_rate_increase and per_request(t.error_rate, c.error_rate):
        reasons.append(("errors", f"error rate {t.error_rate:.1%} vs control {c.error_rate:.1%}"))
    if (t.rejection_rate - c.rejection_rate > th.max_rejection_rate_increase
            and per_request(t.rejection_rate, c.rejection_rate)):
        reasons.append(("rejections", f"4xx rate {t.rejection_rate:.1%} vs control {c.rejection_rate:.1%}"))
    if _answered(t) == 0:
        return reasons  # nothing answered: no quality to judge
    if (t.repetition_rate > th.max_repetition_rate and t.repetition_rate - c.repetition_rate > th.repetition_margin
            and per_answer(t.repetition_rate, c.repetition_rate)):
        reasons.append(
            ("repetition", f"repetition rate {t.repetition_rate:.1%} > {th.max_repetition_rate:.0%} (control {c.repetition_rate:.1%})")
        )
    if t.refusal_rate - c.refusal_rate > th.max_refusal_increase and per_answer(t.refusal_rate, c.refusal_rate):
        reasons.append(("refusal", f"refusal rate {t.refusal_rate:.1%} vs control {c.refusal_rate:.1%}"))
    if c.mean_tokens > 0 and t.mean_tokens / c.mean_tokens < th.min_length_ratio:
        reasons.append(("length", f"length ratio {t.mean_tokens / c.mean_tokens:.2f} < {th.min_length_ratio:.2f}"))
    if c.coherence - t.coherence > th.max_coherence_drop:
        reasons.append(("coherence", f"coherence {t.coherence:.2f} vs control {c.coherence:.2f}"))
    if (t.truncation_rate - c.truncation_rate > th.max_truncation_increase
            and per_answer(t.truncation_rate, c.truncation_rate)):
        reasons.append(("truncation", f"finish_reason=length {t.truncation_rate:.1%} vs control {c.truncation_rate:.1%}"))
    if th.max_latency_ratio and c.latency_p50_s and t.latency_p50_s:
        if t.latency_p50_s / c.latency_p50_s > th.max_latency_ratio:
            reasons.append(("latency", f"p50 latency ratio {t.latency_p50_s / c.latency_p50_s:.2f} > {th.max_latency_ratio}"))
    return reasons
