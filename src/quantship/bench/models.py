"""The data a benchmark produces: one record per request, one summary per level.

Everything that leaves the load generator is one of these pydantic models, so the
JSON in the run directory, the table and the plots all read the same numbers.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

Api = Literal["chat", "completions"]
Mode = Literal["concurrency", "rate"]


class Target(BaseModel):
    """One OpenAI-compatible endpoint under test."""

    label: str
    base_url: str  # ends in /v1
    model: str
    api: Api = "chat"
    metrics_url: str | None = None  # default: /metrics at the server root

    @property
    def root_url(self) -> str:
        """The server root, where /metrics and /health live."""
        return self.base_url[: -len("/v1")] if self.base_url.endswith("/v1") else self.base_url

    @property
    def prometheus_url(self) -> str:
        return self.metrics_url or self.root_url + "/metrics"


class RequestRecord(BaseModel):
    """What the client saw of one request; times are seconds on the run's clock."""

    endpoint: str
    level: float
    phase: Literal["warmup", "measure"]
    start_s: float
    scheduled_s: float | None = None  # Poisson mode: the planned arrival offset
    ttft_s: float | None = None
    e2e_s: float | None = None
    itl_s: list[float] = Field(default_factory=list)  # gaps between content chunks
    output_tokens: int = 0
    tokens_from: Literal["usage", "chunks"] = "chunks"
    chunks: int = 0
    prompt_tokens: int | None = None
    status: int | None = None
    error: str | None = None  # a short kind: http_500, connect, timeout, stream_cut, ...

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def tpot_s(self) -> float | None:
        """Time per output token after the first (vLLM's definition)."""
        if self.ttft_s is None or self.e2e_s is None or self.output_tokens < 2:
            return None
        return (self.e2e_s - self.ttft_s) / (self.output_tokens - 1)


class Distribution(BaseModel):
    """Exact order statistics of one latency, in milliseconds."""

    n: int
    mean: float
    p50: float
    p90: float
    p95: float
    p99: float
    min: float
    max: float


class Goodput(BaseModel):
    """Share of measured requests that met every stated SLO; errors are misses."""

    slo_ttft_ms: float | None
    slo_e2e_ms: float | None
    met: int
    total: int
    share: float
    good_requests_per_s: float


class ServerCheck(BaseModel):
    """Client mean vs the server's own Prometheus histogram mean over the same window."""

    metric: str
    client_mean_ms: float
    server_mean_ms: float | None
    client_n: int
    server_n: int
    relative_diff: float | None
    tolerance: float
    agree: bool


class LevelSummary(BaseModel):
    """One endpoint at one load level (a concurrency or a request rate)."""

    endpoint: str
    mode: Mode
    level: float
    requests: int
    ok: int
    errors: int
    error_kinds: dict[str, int]
    duration_s: float
    ttft_ms: Distribution | None
    itl_ms: Distribution | None
    tpot_ms: Distribution | None
    e2e_ms: Distribution | None
    output_tokens: int
    output_tokens_per_s: float
    requests_per_s: float
    tokens_from_usage: bool
    goodput: Goodput | None = None
    server_checks: list[ServerCheck] = Field(default_factory=list)


class Ratio(BaseModel):
    """compare / baseline for one metric at one level (None when either is missing)."""

    metric: str
    baseline: float | None
    compare: float | None
    ratio: float | None


class LevelComparison(BaseModel):
    level: float
    ratios: list[Ratio]


class BenchSettings(BaseModel):
    """The knobs of a run, recorded next to its numbers."""

    mode: Mode
    levels: list[float]
    requests: int
    warmup: int
    max_tokens: int
    ignore_eos: bool
    temperature: float = 0.0
    rounds: int
    seed: int
    timeout_s: float
    max_concurrency: int | None = None
    slo_ttft_ms: float | None = None
    slo_e2e_ms: float | None = None
    prompts: str
    prompt_count: int


class BenchReport(BaseModel):
    settings: BenchSettings
    targets: list[Target]
    summaries: list[LevelSummary]
    comparisons: list[LevelComparison] = Field(default_factory=list)
