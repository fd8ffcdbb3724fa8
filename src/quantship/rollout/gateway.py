"""The gateway: an OpenAI-compatible proxy that splits users between two backends.

Clients point at the gateway instead of the servers. Each request is assigned by
consistent hashing of its user key, forwarded with the backend's served model
name, streamed back byte for byte, and then observed by the quality monitor.
A failing treatment is answered by the control for that request and, after
repeated failures, taken out of traffic by the circuit breaker. A client's bad
input is refused before routing (validate.py), so it never counts against a
variant, and no client header (credentials, cookies) ever reaches a backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import random
import re
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any

import anyio
import httpx
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from quantship.rollout import analysis, logprobs
from quantship.rollout.assign import CONTROL, TREATMENT, assign
from quantship.rollout.breaker import OPEN, CircuitBreaker
from quantship.rollout.config import RolloutConfig
from quantship.rollout.controller import Conflict, Controller
from quantship.rollout.errors import ApiError, CrashGuard, CrashLog
from quantship.rollout.judge import Judge
from quantship.rollout.metrics import Metrics
from quantship.rollout.openapi import openapi
from quantship.rollout.probes import run_probes
from quantship.rollout.quality import Observation, compile_refusals, observe
from quantship.rollout.sse import CompletionReader
from quantship.rollout.store import Store, open_store
from quantship.rollout.validate import RequestError, check_request, parse
from quantship.rollout.webhook import WebhookOutbox

log = logging.getLogger("quantship.rollout")
VARIANT_HEADER = "x-quantship-variant"
AUDIT_LIMIT_MAX = 10_000
_AUDIT_LIMIT = re.compile(r"[0-9]{1,6}")  # ASCII digits only: str.isdigit() also takes "²", which int() refuses


class BackendFailed(Exception):
    """The backend errored (5xx), timed out or refused the connection."""


@dataclass
class Upstream:
    """A backend response whose first body bytes already arrived (streamed) or whole body (not)."""

    response: httpx.Response
    first: bytes
    chunks: AsyncIterator[bytes] | None
    reader: CompletionReader  # already fed with `first`


def _no_cookies() -> CookieJar:
    """A jar that keeps nothing: a backend's Set-Cookie must never be replayed on another user's request."""
    return CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))


class Gateway:
    def __init__(self, config: RolloutConfig, store: Store | None = None):
        self.config = config
        self.store = store or open_store(config.store, config.experiment)
        self.metrics = Metrics()
        self.breaker = CircuitBreaker(config.breaker.failures, config.breaker.reset_s)
        self.metrics.breaker_open.set_function(lambda: self.breaker.state == OPEN)
        self.judge = Judge(config.live_kl, config.control.model, config.treatment.model, self.metrics, self.store,
                           config.check_interval_s)
        self.controller = Controller(config, self.store, self.metrics, lambda: self.breaker.is_open, self.judge.min_samples)
        self.outbox = (
            WebhookOutbox(config.webhook_url, config.timeouts.webhook_s, config.webhook_retry_s, self.store)
            if config.webhook_url else None
        )
        self.refusals = compile_refusals(config.refusal_patterns)
        self.backends = {CONTROL: config.control, TREATMENT: config.treatment}
        self.clients: dict[str, httpx.AsyncClient] = {}
        self.crash_log = CrashLog()
        self._tasks: list[asyncio.Task] = []
        self.app = self._build_app()

    # -- lifecycle -------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        timeouts = self.config.timeouts
        timeout = httpx.Timeout(connect=timeouts.connect_s, read=timeouts.read_s, write=timeouts.read_s, pool=timeouts.connect_s)
        limits = httpx.Limits(max_connections=1024, max_keepalive_connections=256, keepalive_expiry=2.0)  # under servers' 5 s
        for variant, backend in self.backends.items():
            headers = {}
            if backend.api_key_env:
                key = os.environ.get(backend.api_key_env)
                if key:
                    headers["authorization"] = f"Bearer {key}"
            transport = httpx.AsyncHTTPTransport(retries=1, limits=limits)  # retries connect errors only
            self.clients[variant] = httpx.AsyncClient(
                base_url=backend.url, timeout=timeout, headers=headers, transport=transport, cookies=_no_cookies(),
            )
        await self.controller.start()
        self._tasks = [asyncio.create_task(self._check_loop(), name="rollout-checks")]
        if self.config.live_kl.sample_rate > 0 and self.config.thresholds.max_live_kl is not None:
            self._tasks.append(asyncio.create_task(self._judge_loop(), name="rollout-live-kl"))
        if self.config.probes:
            self._tasks.append(asyncio.create_task(self._probe_loop(), name="rollout-probes"))
        if self.outbox:
            self._tasks.append(asyncio.create_task(self._webhook_loop(), name="rollout-webhooks"))
        try:
            yield
        finally:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            if self.outbox and self.controller.leader:  # a last try; what stays pending is sent after the restart
                with contextlib.suppress(Exception):
                    await self.outbox.deliver_due()
            for client in self.clients.values():
                await client.aclose()
            await self.store.close()

    async def _check_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.check_interval_s)
            try:
                await self.controller.tick()
            except Exception:  # a store hiccup must not stop the monitor for good
                log.exception("rollout check failed; retrying at the next interval")

    async def _judge_loop(self) -> None:
        try:
            await self.judge.run(self.clients[CONTROL], self.clients[TREATMENT])
        except Exception:  # never reached by design; a judge bug must not go unseen, nor take the gateway down
            log.exception("live KL scorer stopped")

    async def _probe_loop(self) -> None:
        while True:
            try:
                state = self.controller.state
                if self.controller.leader and state is not None and state.status != "rolled_back":
                    self.controller.probes = await run_probes(self.config.probes, self.clients, self.backends, self.metrics)
            except Exception:
                log.exception("known-answer probes failed; retrying at the next interval")
            await asyncio.sleep(self.config.probe_interval_s)

    async def _webhook_loop(self) -> None:
        """The leader delivers the outbox when a change queues an event, and retries at each check interval."""
        ready = self.controller.outbox_ready
        while True:
            with contextlib.suppress(TimeoutError):  # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancel
                async with asyncio.timeout(self.config.check_interval_s):
                    await ready.wait()
            ready.clear()
            try:
                if self.controller.leader:
                    await self.outbox.deliver_due()
            except Exception:
                log.exception("webhook delivery failed; retrying at the next interval")

    # -- routes ----------------------------------------------------------------------
    def _build_app(self) -> Starlette:
        async def on_http_error(request: Request, exc: HTTPException) -> Response:
            kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
            return ApiError(exc.status_code, str(exc.detail), kind).response()

        async def on_api_error(request: Request, exc: ApiError) -> Response:
            return exc.response()

        routes = [
            Route("/v1/chat/completions", self._chat, methods=["POST"]),
            Route("/v1/completions", self._completions, methods=["POST"]),
            Route("/v1/models", self._models, methods=["GET"]),
            Route("/health", self._health, methods=["GET"]),
            Route("/metrics", self._metrics, methods=["GET"]),
            Route("/openapi.json", self._openapi, methods=["GET"]),
            Route("/rollout/analysis", analysis.handler(self), methods=["GET", "POST"]),
            Route("/admin/status", self._status, methods=["GET"]),
            Route("/admin/audit", self._audit, methods=["GET"]),
            Route("/admin/promote", self._promote, methods=["POST"]),
            Route("/admin/pause", self._pause, methods=["POST"]),
            Route("/admin/resume", self._resume, methods=["POST"]),
            Route("/admin/rollback", self._rollback, methods=["POST"]),
        ]
        return Starlette(
            routes=routes,
            lifespan=self.lifespan,
            middleware=[Middleware(CrashGuard, crash_log=self.crash_log)],
            exception_handlers={HTTPException: on_http_error, ApiError: on_api_error},
        )

    async def _openapi(self, request: Request) -> Response:
        return JSONResponse(openapi(self.config))

    async def _models(self, request: Request) -> Response:
        names = self.config.models or [self.config.control.model]
        data = [{"id": n, "object": "model", "created": 0, "owned_by": "quantship-rollout"} for n in names]
        return JSONResponse({"object": "list", "data": data})

    async def _health(self, request: Request) -> Response:
        state = self.controller.state
        return JSONResponse({"status": "ok", "rollout": state.status if state else "starting"})

    async def _metrics(self, request: Request) -> Response:
        return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def _chat(self, request: Request) -> Response:
        return await self._complete(request, "chat")

    async def _completions(self, request: Request) -> Response:
        return await self._complete(request, "completions")

    # -- proxy -----------------------------------------------------------------------
    async def _read_body(self, request: Request, endpoint: str) -> dict[str, Any]:
        limit = self.config.max_request_bytes
        declared = request.headers.get("content-length")
        if declared and declared.isascii() and declared.isdigit() and int(declared) > limit:
            raise ApiError(413, f"request body is larger than the gateway limit of {limit} bytes")
        chunks, size = [], 0
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise ApiError(413, f"request body is larger than the gateway limit of {limit} bytes")
                chunks.append(chunk)
        except ClientDisconnect as error:
            raise ApiError(400, "client disconnected while sending the request") from error
        try:
            body = parse(b"".join(chunks))
            check_request(body, endpoint, self.config.max_tokens_limit)
        except RequestError as error:
            raise ApiError(400, str(error), param=error.param) from error
        model = body.get("model")
        if self.config.models and model not in self.config.models:
            raise ApiError(404, f"model {model!r} does not exist; use one of {self.config.models}", "not_found_error",
                           "model_not_found", "model")
        return body

    def _route(self, request: Request, body: dict[str, Any]) -> tuple[str, bool]:
        """The variant assigned to the request, and whether it carried a user key (else the fallback routes it)."""
        fraction = self.controller.fraction()
        user = body.get("user") or request.headers.get(self.config.user_header)  # validated: a string or absent
        if user:
            return assign(self.config.experiment, user, fraction), True
        self.metrics.unkeyed.inc()
        if self.config.fallback == "client-ip" and request.client is not None:
            return assign(self.config.experiment, f"ip:{request.client.host}", fraction), False
        if self.config.fallback == "random":
            return (TREATMENT if random.random() < fraction else CONTROL), False
        return CONTROL, False

    async def _complete(self, request: Request, endpoint: str) -> Response:
        body = await self._read_body(request, endpoint)
        variant, keyed = self._route(request, body)
        judged = self.judge.draw(variant, endpoint, body)
        # A judged treatment answer comes with its own log-probabilities, asked here and hidden again below.
        sent = (logprobs.ask(body, endpoint) if judged and self.judge.paired else None) or body
        unkeyed = {} if keyed else {"unkeyed": 1}
        stream = bool(body.get("stream"))
        path = "/v1/chat/completions" if endpoint == "chat" else "/v1/completions"
        stage = self.controller.state.stage
        start = time.perf_counter()
        upstream, variant, failover = await self._dispatch(variant, endpoint, path, sent, stream, stage, start, unkeyed)
        if failover:
            self.metrics.failovers.labels(failover).inc()
        headers = {VARIANT_HEADER: variant, "x-quantship-experiment": self.config.experiment}
        if failover:
            headers["x-quantship-failover"] = failover
        extra = {**unkeyed, **({"failovers.circuit_open": 1} if failover == "circuit_open" else {})}
        response = upstream.response
        if response.status_code >= 400:  # the backend refused the request: pass it on, judge the rate
            content = await response.aread()
            await response.aclose()
            rejected = Observation(variant=variant, ts=time.time(), ok=False, rejected=True, latency_s=time.perf_counter() - start)
            await self.store.record({f"requests.{variant}": 1, f"client_errors.{variant}": 1, **extra}, rejected)
            self.metrics.requests.labels(variant, endpoint, "client_error").inc()
            return Response(content, response.status_code, headers=headers, media_type=response.headers.get("content-type"))
        if not stream:
            reader = CompletionReader()
            content = response.content
            reader.feed_body(content)
            await self._record(variant, endpoint, stage, reader, time.perf_counter() - start, None, extra)
            if judged and reader.error is None:
                self.judge.offer(variant, endpoint, body, reader)
            if sent is not body:
                content = logprobs.strip(content)
            return Response(content, 200, headers=headers, media_type="application/json")
        hide = logprobs.StreamStripper() if sent is not body else None
        return StreamingResponse(
            self._relay(upstream, variant, endpoint, stage, start, extra, body if judged else None, hide),
            media_type="text/event-stream",
            headers={**headers, "cache-control": "no-cache", "x-accel-buffering": "no"},
        )

    async def _dispatch(
        self, variant: str, endpoint: str, path: str, body: dict[str, Any], stream: bool, stage: int, start: float,
        unkeyed: dict[str, int],
    ) -> tuple[Upstream, str, str | None]:
        """Send to the assigned variant, failing over to the control; returns the answer, who gave it, and why if moved."""
        failover: str | None = None
        trial = variant == TREATMENT and self.breaker.is_open  # if allowed, this request is the half-open trial
        if variant == TREATMENT and not self.breaker.allow():
            variant, failover = CONTROL, "circuit_open"
        # The breaker learns the outcome of every request it allowed, whatever happens to it
        # (a client that leaves, a crash); an outcome that says nothing about the treatment releases a trial.
        settle = self.breaker.release if variant == TREATMENT and trial else None
        try:
            treatment_error: BackendFailed | None = None
            if variant == TREATMENT:
                try:
                    upstream = await self._send(TREATMENT, path, body, stream)
                    if upstream.response.status_code < 400:
                        settle = self.breaker.success
                except BackendFailed as error:
                    treatment_error, variant, failover = error, CONTROL, "treatment_failed"
                    log.debug("treatment failed, failing over: %s", error)
            if variant == CONTROL:
                try:
                    upstream = await self._send(CONTROL, path, body, stream)
                except BackendFailed as error:
                    if treatment_error is None:
                        await self._record(CONTROL, endpoint, stage, None, time.perf_counter() - start, None, unkeyed)
                    else:
                        self.metrics.requests.labels(CONTROL, endpoint, "error").inc()
                        await self._record_both_failed({"requests.control": 1, "errors.control": 1, **unkeyed})
                    raise ApiError(502, f"control backend failed: {error}", "server_error", "backend_unavailable") from error
                if treatment_error is not None and upstream.response.status_code >= 400:
                    await self._record_both_failed({})  # the control's 4xx is recorded with the answer below
                elif treatment_error is not None:  # the control could answer it: the treatment's failure
                    settle = self.breaker.failure
                    await self._record(TREATMENT, endpoint, stage, None, time.perf_counter() - start, None,
                                       {"failovers.treatment_failed": 1})
        finally:
            if settle is not None:
                settle()
        return upstream, variant, failover

    async def _record_both_failed(self, control: dict[str, int]) -> None:
        """The treatment failed a request the control failed too: the request's fault, counted but judged against neither."""
        counters = {"requests.treatment": 1, "failovers.treatment_failed": 1, "failovers.both_failed": 1, **control}
        await self.store.record(counters, None)

    async def _send(self, variant: str, path: str, body: dict[str, Any], stream: bool) -> Upstream:
        """Send and wait for the first body bytes, so that every failure up to there can fail over."""
        payload = {**body, "model": self.backends[variant].model}
        client = self.clients[variant]
        for attempt in (1, 2):
            try:
                request = client.build_request("POST", path, json=payload)
                response = await client.send(request, stream=stream)  # non-streamed: the whole body is read here
                break
            except httpx.RemoteProtocolError as error:  # a keep-alive connection the server had just closed
                if attempt == 2:
                    raise BackendFailed(f"{type(error).__name__}: {error}") from error
            except httpx.HTTPError as error:
                raise BackendFailed(f"{type(error).__name__}: {error}") from error
        if response.status_code >= 500 or (variant == TREATMENT and response.status_code == 429):  # 429: overloaded
            await response.aclose()
            raise BackendFailed(f"HTTP {response.status_code}")
        if not stream or response.status_code >= 400:
            return Upstream(response, b"", None, CompletionReader())
        chunks = response.aiter_raw()
        reader = CompletionReader()
        prefix = []
        try:  # hold only what precedes the first token (e.g. the role chunk), then commit to this backend
            while not (reader.content_events or reader.finish_reason):
                chunk = await anext(chunks, None)
                if chunk is None:
                    break
                prefix.append(chunk)
                reader.feed(chunk)
        except httpx.HTTPError as error:
            await response.aclose()
            raise BackendFailed(f"no first token: {type(error).__name__}: {error}") from error
        return Upstream(response, b"".join(prefix), chunks, reader)

    async def _relay(
        self, upstream: Upstream, variant: str, endpoint: str, stage: int, start: float, extra: dict[str, int],
        judged: dict[str, Any] | None, hide: logprobs.StreamStripper | None,
    ) -> AsyncIterator[bytes]:
        """Forward each chunk as it arrives; observe a copy; record once the stream ends.

        `judged` is the client's request when the judge sampled this answer; `hide` strips the
        log-probabilities the gateway asked for.
        """
        reader = upstream.reader
        ttft = time.perf_counter() - start if reader.content_events else None
        failed = False
        cancelled = False
        try:
            if out := hide.feed(upstream.first) if hide else upstream.first:
                yield out
            async for chunk in upstream.chunks:
                if reader.feed(chunk) and ttft is None:
                    ttft = time.perf_counter() - start
                if out := hide.feed(chunk) if hide else chunk:
                    yield out
            if hide and (out := hide.flush()):
                yield out
        except httpx.HTTPError as error:
            failed = True
            message = ApiError(502, f"{variant} backend failed mid-stream: {error}", "server_error").body()
            yield f"data: {json.dumps(message)}\n\ndata: [DONE]\n\n".encode()
        except (asyncio.CancelledError, GeneratorExit):
            cancelled = True  # the client went away: nothing to judge
            raise
        finally:
            with anyio.CancelScope(shield=True):
                await upstream.response.aclose()
                if variant == TREATMENT and failed:
                    self.breaker.failure()
                latency = time.perf_counter() - start
                if cancelled:
                    await self.store.record({f"requests.{variant}": 1, "client_disconnects": 1, **extra}, None)
                else:
                    await self._record(variant, endpoint, stage, None if failed else reader, latency, ttft, extra)
                    if judged is not None and not failed and reader.error is None:
                        self.judge.offer(variant, endpoint, judged, reader)

    async def _record(
        self, variant: str, endpoint: str, stage: int, reader: CompletionReader | None,
        latency: float, ttft: float | None, extra: dict[str, int],
    ) -> None:
        """Counters, window observation and Prometheus for one finished request (reader None: failed)."""
        now = time.time()
        counters = {f"requests.{variant}": 1, f"stage.{stage}.{variant}": 1, **extra}
        if reader is None or reader.error:
            counters[f"errors.{variant}"] = 1
            observation = Observation(variant=variant, ts=now, ok=False, latency_s=latency)
            self.metrics.requests.labels(variant, endpoint, "error").inc()
        else:
            tokens = reader.tokens()
            observation = observe(variant, now, reader.text, tokens, reader.finish_reason, self.refusals, ttft, latency)
            counters[f"tokens.{variant}"] = tokens
            self.metrics.requests.labels(variant, endpoint, "ok").inc()
            self.metrics.tokens.labels(variant, "completion").inc(tokens)
            if reader.prompt_tokens:
                self.metrics.tokens.labels(variant, "prompt").inc(reader.prompt_tokens)
            self.metrics.latency.labels(variant).observe(latency)
            if ttft is not None:
                self.metrics.ttft.labels(variant).observe(ttft)
        await self.store.record(counters, observation)

    # -- admin -----------------------------------------------------------------------
    def _authorise(self, request: Request) -> None:
        token = self.config.admin_token()
        if token is None:
            raise ApiError(403, f"admin API disabled: set {self.config.admin_token_env} before starting the gateway",
                           "permission_error")
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            raise ApiError(401, "missing or wrong admin bearer token", "authentication_error")

    async def _reason(self, request: Request) -> str:
        raw = await request.body()
        try:
            body = parse(raw) if raw else {}
        except RequestError as error:
            raise ApiError(400, f"admin request body must be a JSON object: {error}") from error
        return str(body.get("reason", ""))[:500]

    async def status(self) -> dict[str, Any]:
        await self.controller.refresh()
        state = self.controller.state
        last = self.controller.last_check
        probes = self.controller.probes
        return {
            "experiment": self.config.experiment,
            "stage": state.stage,
            "stage_name": self.config.stages[state.stage].name,
            "stages": [s.model_dump() for s in self.config.stages],
            "status": state.status,
            "treatment_fraction": self.controller.fraction(),
            "consecutive_breaches": state.consecutive_breaches,
            "reasons": state.reasons,
            "stage_entered_at": state.stage_entered_at,
            "counters": await self.store.counters(),
            "circuit": self.breaker.state,
            "circuit_open": self.breaker.state == OPEN,
            "last_check": last.to_dict() if last else None,
            "probes": asdict(probes) if probes else None,
            "live_kl": self.judge.state,
        }

    async def _status(self, request: Request) -> Response:
        self._authorise(request)
        return JSONResponse(await self.status())

    async def _audit(self, request: Request) -> Response:
        self._authorise(request)
        limit = request.query_params.get("limit", "100")
        if not _AUDIT_LIMIT.fullmatch(limit) or int(limit) > AUDIT_LIMIT_MAX:
            raise ApiError(400, f"'limit' must be an integer from 0 to {AUDIT_LIMIT_MAX}", param="limit")
        return JSONResponse({"events": await self.store.audit_log(int(limit))})

    async def _admin(self, request: Request, action) -> Response:
        self._authorise(request)
        try:
            await action(await self._reason(request))
        except Conflict as error:
            raise ApiError(409, str(error), "conflict_error") from error
        return JSONResponse(await self.status())

    async def _promote(self, request: Request) -> Response:
        return await self._admin(request, lambda reason: self.controller.promote("admin", reason))

    async def _pause(self, request: Request) -> Response:
        return await self._admin(request, lambda reason: self.controller.pause("admin"))

    async def _resume(self, request: Request) -> Response:
        return await self._admin(request, lambda reason: self.controller.resume("admin"))

    async def _rollback(self, request: Request) -> Response:
        return await self._admin(request, lambda reason: self.controller.rollback("admin", [reason or "manual rollback"]))


def build_app(config: RolloutConfig, store: Store | None = None) -> Starlette:
    return Gateway(config, store).app
