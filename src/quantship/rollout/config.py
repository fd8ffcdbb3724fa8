"""The rollout configuration: one YAML file that can be committed next to the service.

Every number that decides traffic or a rollback lives here with a documented
default, so a rollout is reproducible from the file alone. The admin token is
never in the file: only the name of the environment variable that holds it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from quantship.errors import InputError

DEFAULT_REFUSALS = (
    r"\bI(?:'m| am) sorry\b",
    r"\bI (?:can(?:no|')t|cannot|won't|will not) (?:help|assist|comply|provide|do that)",
    r"\bI(?:'m| am) (?:not able|unable) to\b",
    r"\bas an AI\b",
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Backend(_Strict):
    """An OpenAI-compatible server: base URL (with or without /v1) and its served model name."""

    url: str
    model: str
    api_key_env: str | None = Field(None, description="env var holding a bearer key for this backend")

    @field_validator("url")
    @classmethod
    def _normalise(cls, url: str) -> str:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"backend url {url!r} must start with http:// or https://")
        url = url.rstrip("/")
        return url[: -len("/v1")] if url.endswith("/v1") else url


class Stage(_Strict):
    name: str
    fraction: float = Field(ge=0.0, le=1.0, description="share of users sent to the treatment")


class Thresholds(_Strict):
    """Breach rules; the treatment is judged against the control in the same window."""

    max_repetition_rate: float = 0.15  # share of treatment responses caught in an n-gram loop
    repetition_margin: float = 0.05  # ... and this much above the control's rate
    max_refusal_increase: float = 0.10  # treatment refusal rate minus control's
    min_length_ratio: float = 0.60  # mean treatment completion tokens / control's
    max_coherence_drop: float = 0.15  # control coherence minus treatment's
    max_error_rate_increase: float = 0.05  # failed treatment requests, minus control's rate
    max_rejection_rate_increase: float = 0.05  # treatment 4xx answers, minus control's rate (same traffic, same 4xx)
    max_truncation_increase: float = 0.25  # finish_reason=length share, minus control's
    # A rate signal (errors, 4xx, repetition, refusal, truncation) breaches only when its excess over
    # the control is also unlikely to be luck: one-sided Fisher exact p below this (rollout/stats.py); 1: off
    significance: float = Field(0.01, gt=0, le=1)
    max_latency_ratio: float | None = None  # off by default: slower is not worse quality
    # nats/token, twice the gate's max_kl_mean: a variant that passed the gate keeps a 2x margin (docs/rollout.md); null: off
    max_live_kl: float | None = 0.1


class Probe(_Strict):
    """A known-answer prompt: passes when the answer contains any `expect` string."""

    prompt: str
    expect: list[str] = Field(min_length=1)
    max_tokens: int = 32
    api: Literal["chat", "completions"] = "chat"  # completions suits base models and plain prompts


class Breaker(_Strict):
    failures: int = Field(5, ge=1, description="consecutive treatment failures that open the circuit")
    reset_s: float = Field(15.0, gt=0, description="seconds open before one trial request")


class LiveKL(_Strict):
    """The control model judging sampled answers off the request path (rollout/judge.py)."""

    sample_rate: float = Field(
        0.05, ge=0.0, le=1.0, description="share of treatment answers sent to the judge (of both variants when unpaired)"
    )
    queue_size: int = Field(64, ge=1, description="samples waiting to be scored; more are dropped and counted")
    min_samples: int = Field(10, ge=1, description="scores in the window (per variant when unpaired); fewer: insufficient")
    timeout_s: float = Field(30.0, gt=0, description="one scoring call to the control")


class Timeouts(_Strict):
    connect_s: float = Field(2.0, gt=0)
    read_s: float = Field(60.0, gt=0, description="longest silence allowed between bytes")
    webhook_s: float = Field(5.0, gt=0)
    # Idle keep-alive towards clients; above load balancers' idle timeouts (60 s on AWS ALB),
    # so the gateway never closes a connection a balancer is about to reuse.
    client_keep_alive_s: float = Field(75.0, gt=0)


class RolloutConfig(_Strict):
    experiment: str = Field(min_length=1, pattern=r"^[A-Za-z0-9._-]+$")
    control: Backend
    treatment: Backend
    models: list[str] = Field(default_factory=list, description="client-facing model names; empty accepts any")
    stages: list[Stage] = Field(
        default_factory=lambda: [
            Stage(name="control", fraction=0.0),
            Stage(name="canary", fraction=0.10),
            Stage(name="25%", fraction=0.25),
            Stage(name="50%", fraction=0.50),
            Stage(name="75%", fraction=0.75),
            Stage(name="full", fraction=1.0),
        ]
    )
    initial_stage: int = 0
    auto_promote: bool = True
    min_samples: int = Field(200, ge=1, description="treatment responses in a stage before promotion")
    min_stage_seconds: float = Field(600.0, ge=0)
    window_seconds: float = Field(120.0, gt=0)
    window_min_samples: int = Field(30, ge=1, description="per variant, for a check to count")
    check_interval_s: float = Field(10.0, gt=0)
    flush_interval_s: float = Field(
        1.0, gt=0, description="request counters and observations reach the store this often (a crash loses at most this much)"
    )
    breach_checks: int = Field(3, ge=1, description="consecutive breached checks before rollback")
    thresholds: Thresholds = Field(default_factory=Thresholds)
    refusal_patterns: list[str] = Field(default_factory=lambda: list(DEFAULT_REFUSALS))
    live_kl: LiveKL = Field(default_factory=LiveKL)
    probes: list[Probe] = Field(default_factory=list)
    probe_interval_s: float = Field(60.0, gt=0)
    user_header: str = "x-user-id"
    fallback: Literal["control", "client-ip", "random"] = "control"
    webhook_url: str | None = None
    webhook_retry_s: float = Field(1.0, gt=0, description="first webhook retry delay; doubles per failure up to 5 min")
    admin_token_env: str = "QUANTSHIP_ROLLOUT_TOKEN"
    store: str = "sqlite:///rollout.db"
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    max_request_bytes: int = Field(1_000_000, ge=1024)
    max_tokens_limit: int | None = Field(None, ge=1, description="largest max_tokens the backends accept (vLLM: max_model_len)")
    timeouts: Timeouts = Field(default_factory=Timeouts)
    breaker: Breaker = Field(default_factory=Breaker)
    lease_s: float = Field(15.0, gt=0, description="controller lease when replicas share a store")

    @model_validator(mode="after")
    def _check(self) -> RolloutConfig:
        if not self.stages:
            raise ValueError("stages must not be empty")
        fractions = [s.fraction for s in self.stages]
        if fractions != sorted(fractions):
            raise ValueError("stage fractions must not decrease: users only ever move into treatment")
        if not 0 <= self.initial_stage < len(self.stages):
            raise ValueError(f"initial_stage {self.initial_stage} is not a stage index")
        if not self.store.startswith(("sqlite:///", "redis://", "rediss://")):
            raise ValueError("store must be sqlite:///PATH or redis://HOST:PORT/DB")
        return self

    def admin_token(self) -> str | None:
        return os.environ.get(self.admin_token_env) or None


def load_config(path: Path) -> RolloutConfig:
    """Read and validate a rollout YAML file; every problem becomes one line."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"rollout config {path} does not exist", "pass --config PATH to a rollout YAML file")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise InputError(f"rollout config {path} is not valid YAML ({error})", "fix the YAML syntax") from error
    try:
        return RolloutConfig.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise InputError(
            f"rollout config {path}: {where}: {first['msg']}",
            "see docs/rollout.md for every key and its default",
        ) from error
