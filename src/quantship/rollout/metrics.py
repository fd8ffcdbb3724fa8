"""Prometheus metrics of one gateway process (its own registry, so tests can run several)."""

from __future__ import annotations

import math
from dataclasses import asdict

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from quantship.rollout.monitor import SIGNALS, MonitorCheck

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_QUALITY = (
    "error_rate", "rejection_rate", "repetition_rate", "refusal_rate", "truncation_rate", "mean_tokens", "coherence", "samples",
    "scored", "control_nll", "paired", "paired_kl",
)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "quantship_rollout_requests", "Requests answered, by serving variant, endpoint and outcome.",
            ["variant", "endpoint", "outcome"], registry=r,
        )
        self.tokens = Counter("quantship_rollout_tokens", "Tokens by variant and kind.", ["variant", "kind"], registry=r)
        self.ttft = Histogram(
            "quantship_rollout_ttft_seconds", "Time to first token (streaming) per variant.", ["variant"],
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.latency = Histogram(
            "quantship_rollout_latency_seconds", "End-to-end request latency per variant.", ["variant"],
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.failovers = Counter(
            "quantship_rollout_failovers", "Treatment requests answered by the control instead.", ["cause"], registry=r,
        )
        self.unkeyed = Counter("quantship_rollout_unkeyed_requests", "Requests without a user key, routed by the fallback.", registry=r)
        self.quality = Gauge("quantship_rollout_quality", "Quality signals in the current window.", ["variant", "signal"], registry=r)
        self.stage = Gauge("quantship_rollout_stage", "Current stage index.", registry=r)
        self.fraction = Gauge("quantship_rollout_treatment_fraction", "Share of users routed to the treatment.", registry=r)
        self.rolled_back = Gauge("quantship_rollout_rolled_back", "1 once the rollout has been rolled back.", registry=r)
        self.rollbacks = Counter("quantship_rollout_rollbacks", "Rollbacks applied by this process.", ["trigger"], registry=r)
        self.checks = Counter("quantship_rollout_checks", "Periodic checks by result.", ["result"], registry=r)
        self.alerts = Counter("quantship_rollout_alerts", "Breach reasons raised by checks.", ["signal"], registry=r)
        self.breaker_open = Gauge("quantship_rollout_circuit_open", "1 while the treatment circuit breaker is open.", registry=r)
        self.probes = Counter("quantship_rollout_probes", "Known-answer probes by variant and result.", ["variant", "result"], registry=r)
        self.live_kl = Gauge(
            "quantship_rollout_live_kl", "Live KL estimate in the window (nats/token; NaN while disabled or insufficient).",
            registry=r,
        )
        self.live_kl_enabled = Gauge("quantship_rollout_live_kl_enabled", "1 when the control can score answers.", registry=r)
        self.live_kl_paired = Gauge(
            "quantship_rollout_live_kl_paired",
            "1 when the treatment sends its own token log-probabilities (paired estimate), 0: cross-entropy gap.", registry=r,
        )
        self.live_kl_samples = Counter(
            "quantship_rollout_live_kl_samples", "Sampled answers for the live KL by variant and result (scored, dropped, failed).",
            ["variant", "result"], registry=r,
        )

        # Known label values start at 0, so dashboards and rate() see them before the first event.
        for cause in ("treatment_failed", "circuit_open"):
            self.failovers.labels(cause)
        for trigger in ("automatic", "manual"):
            self.rollbacks.labels(trigger)
        for signal in SIGNALS:
            self.alerts.labels(signal)
        for result in ("pass", "breach", "insufficient"):
            self.checks.labels(result)
        for variant in ("control", "treatment"):
            for result in ("pass", "fail"):
                self.probes.labels(variant, result)
            for result in ("scored", "dropped", "failed"):
                self.live_kl_samples.labels(variant, result)

    def observe_check(self, result: MonitorCheck) -> None:
        self.checks.labels(result.status).inc()
        for signal in result.signals:
            self.alerts.labels(signal).inc()
        for variant, stats in (("control", result.control), ("treatment", result.treatment)):
            values = asdict(stats)
            for signal in _QUALITY:
                self.quality.labels(variant, signal).set(math.nan if values[signal] is None else values[signal])
        self.live_kl.set(math.nan if result.live_kl.value is None else result.live_kl.value)
