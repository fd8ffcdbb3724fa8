"""Cross-check against the server's own Prometheus histograms.

vLLM records every request's TTFT and end-to-end latency in histograms on
`/metrics`. Scraping before and after each measured block and dividing the
increase of `_sum` by that of `_count` gives the server's mean over exactly the
benchmark's requests; a client whose mean disagrees with it by more than a few
percent is measuring something else (queueing in the client, a proxy, a clock).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import httpx
from prometheus_client.parser import text_string_to_metric_families

from quantship.bench.models import ServerCheck

# client measure -> server histogram (names as vLLM's V1 engine exports them)
HISTOGRAMS = {
    "ttft": "vllm:time_to_first_token_seconds",
    "e2e": "vllm:e2e_request_latency_seconds",
}
TOLERANCE = 0.10
# What the client adds that the server cannot see (loopback HTTP, SSE parsing, the event
# loop waking up): a few ms idle, 15 ms measured in CI on 2 cores that vLLM's API server,
# its engine core and the client share. A gap within it agrees whatever its share of a
# short TTFT; a client measuring the wrong thing (headers or the role-only first chunk as
# the first token) is off by the prefill, several times more on these prompts.
CLIENT_OVERHEAD_S = 0.025
# Servers update histograms just after the response is sent; wait this long at most
# for the last requests of a block to be counted.
SETTLE_S = 3.0


@dataclass(frozen=True)
class HistogramTotals:
    """`_sum` and `_count` of one histogram, added over the series that match."""

    sum: float = 0.0
    count: float = 0.0

    def __sub__(self, other: HistogramTotals) -> HistogramTotals:
        return HistogramTotals(self.sum - other.sum, self.count - other.count)

    def __add__(self, other: HistogramTotals) -> HistogramTotals:
        return HistogramTotals(self.sum + other.sum, self.count + other.count)


def histogram_totals(text: str, names: list[str], model: str | None = None) -> dict[str, HistogramTotals]:
    """Totals of the named histograms in a Prometheus text exposition.

    Series labelled with another `model_name` are skipped, so a server that hosts
    several models still gives the figures of the one under test.
    """
    wanted = set(names)
    totals: dict[str, HistogramTotals] = {}
    for family in text_string_to_metric_families(text):
        if family.type != "histogram" or family.name not in wanted:
            continue
        total = HistogramTotals()
        for sample in family.samples:
            if model is not None and sample.labels.get("model_name", model) != model:
                continue
            if sample.name == family.name + "_sum":
                total += HistogramTotals(sum=sample.value)
            elif sample.name == family.name + "_count":
                total += HistogramTotals(count=sample.value)
        totals[family.name] = total
    return totals


@dataclass
class ServerMetrics:
    """Scrapes one server's /metrics around measured blocks and keeps the increase."""

    metrics_url: str
    model: str | None
    names: list[str] = field(default_factory=lambda: list(HISTOGRAMS.values()))
    window: dict[str, HistogramTotals] = field(default_factory=dict)
    _before: dict[str, HistogramTotals] = field(default_factory=dict)

    async def available(self, client: httpx.AsyncClient) -> bool:
        """True when the server exposes at least one of the histograms."""
        return bool(await self._scrape(client))

    async def _scrape(self, client: httpx.AsyncClient) -> dict[str, HistogramTotals]:
        try:
            response = await client.get(self.metrics_url, timeout=10)
        except httpx.HTTPError:
            return {}
        if response.status_code != 200:
            return {}
        try:
            return histogram_totals(response.text, self.names, self.model)
        except ValueError:  # not a Prometheus exposition
            return {}

    async def begin(self, client: httpx.AsyncClient) -> None:
        self._before = await self._scrape(client)

    async def end(self, client: httpx.AsyncClient, expected: int = 0, settle_s: float = SETTLE_S) -> None:
        """Add the increase since `begin` to the window, once `expected` requests are counted."""
        deadline = time.monotonic() + settle_s
        while True:
            after = await self._scrape(client)
            deltas = {name: total - self._before.get(name, HistogramTotals()) for name, total in after.items()}
            if all(d.count >= expected for d in deltas.values()) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        for name, delta in deltas.items():
            self.window[name] = self.window.get(name, HistogramTotals()) + delta
        self._before = {}

    def reset(self) -> None:
        self.window = {}


def compare_means(
    metric: str, client_samples_s: list[float], server: HistogramTotals | None, tolerance: float = TOLERANCE
) -> ServerCheck:
    """Client mean vs server mean; they agree within `tolerance` of the client's, or within CLIENT_OVERHEAD_S."""
    client_mean = sum(client_samples_s) / len(client_samples_s) if client_samples_s else 0.0
    server_mean = server.sum / server.count if server is not None and server.count > 0 else None
    diff = None
    if server_mean is not None and client_mean > 0:
        diff = (server_mean - client_mean) / client_mean
    return ServerCheck(
        metric=metric,
        client_mean_ms=client_mean * 1000.0,
        server_mean_ms=None if server_mean is None else server_mean * 1000.0,
        client_n=len(client_samples_s),
        server_n=int(server.count) if server is not None else 0,
        relative_diff=diff,
        tolerance=tolerance,
        agree=diff is not None and (abs(diff) <= tolerance or abs(server_mean - client_mean) <= CLIENT_OVERHEAD_S),
    )
