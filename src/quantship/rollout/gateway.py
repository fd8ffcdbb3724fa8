"""The gateway: an OpenAI-compatible proxy that splits users between two backends.

Clients point at the gateway instead of the servers. Each request is assigned by
consistent hashing of its user key, forwarded with the backend's served model
name, streamed back chunk by chunk as it arrives, and then observed by the quality
monitor: only after the client's last byte went out, and into an in-memory buffer
that reaches the store once per flush interval (buffered.py). A failing treatment
is answered by the control for that request and, after repeated failures, taken out
of traffic by the circuit breaker. A client's bad input is refused before routing
(validate.py), so it never counts against a variant, and no client header
(credentials, cookies) ever reaches a backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import random
import re
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from typing import Any

import aiohttp
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from quantship.rollout import analysis, logprobs
from quantship.rollout.asgi import JSON_TYPE, SSE_TYPE, Receive, Reply, Send, header, read_body
from quantship.rollout.assign import CONTROL, TREATMENT, assign
from quantship.rollout.background import pause, stop_if_cancelled
from quantship.rollout.breaker import OPEN, CircuitBreaker
from quantship.rollout.buffered import BufferedStore
from quantship.rollout.config import RolloutConfig
from quantship.rollout.controller import Conflict, Controller
from quantship.rollout.errors import INTERNAL, ApiError, CrashGuard, CrashLog
from quantship.rollout.judge import Judge
from quantship.rollout.metrics import Metrics
from quantship.rollout.openapi import openapi
from quantship.rollout.probes import run_probes
from quantship.rollout.quality import Observation, compile_refusals, observe
from quantship.rollout.sse import CompletionReader
from quantship.rollout.store import Store, open_store
from quantship.rollout.upstream import TRANSPORT_ERRORS, BackendClient, Unreachable
from quantship.rollout.validate import RequestError, check_request, parse
from quantship.rollout.webhook import WebhookOutbox

log = logging.getLogger("quantship.rollout")
VARIANT_HEADER = "x-quantship-variant"
AUDIT_LIMIT_MAX = 10_000
_AUDIT_LIMIT = re.compile(r"[0-9]{1,6}")  # ASCII digits only: str.isdigit() also takes "²", which int() refuses
PROXIED = {"/v1/chat/completions": "chat", "/v1/completions": "completions"}  # served by Gateway._proxy, not Starlette
SERVER = {"loop": "uvloop", "http": "httptools"}  # uvicorn's C event loop and HTTP parser (docs/rollout.md, "Performance")
_PARSE_BATCH = 64  # stream chunks parsed at once: one json.loads per batch, bounded memory for long answers
_STREAM_HEADERS = [(b"content-type", SSE_TYPE), (b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]


class BackendFailed(Exception):
    """The backend errored (5xx), timed out or refused the connection."""


@dataclass
class Upstream:
    """A backend answer: its first body bytes (streamed, the rest still to read) or its whole body (not)."""

    response: aiohttp.ClientResponse
    first: bytes
    reader: CompletionReader  # streamed: already fed with `first`


class Gateway:
    def __init__(self, config: RolloutConfig, store: Store | None = None):
        self.config = config
        self.store = BufferedStore(store or open_store(config.store, config.experiment), config.flush_interval_s)
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
        self.clients = {variant: BackendClient(backend, config.timeouts) for variant, backend in self.backends.items()}
        self._user_header = config.user_header.lower().encode("latin-1")
        self.crash_log = CrashLog()
        self._tasks: list[asyncio.Task] = []
        self._starlette = self._build_app()

    @property
    def app(self) -> Gateway:
        """The ASGI app to serve: the gateway itself."""
        return self

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        """The completions routes go straight to the proxy; everything else (and lifespan) to Starlette."""
        if scope["type"] == "http" and scope["path"] in PROXIED:
            await self._proxy(scope, receive, send)
        else:
            await self._starlette(scope, receive, send)

    # -- lifecycle -------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        for client in self.clients.values():
            await client.open()
        await self.controller.start()
        self._tasks = [asyncio.create_task(self._check_loop(), name="rollout-checks"),
                       asyncio.create_task(self.store.run(), name="rollout-record-flush")]
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
                await client.close()
            await self.store.close()

    async def _check_loop(self) -> None:
        while True:
            await pause(self.config.check_interval_s)
            try:
                await self.controller.tick()
            except Exception:  # a store hiccup must not stop the monitor for good
                stop_if_cancelled()
                log.exception("rollout check failed; retrying at the next interval")

    async def _judge_loop(self) -> None:
        try:
            await self.judge.run(self.clients[CONTROL], self.clients[TREATMENT])
        except Exception:  # never reached by design; a judge bug must not go unseen, nor take the gateway down
            stop_if_cancelled()
            log.exception("live KL scorer stopped")

    async def _probe_loop(self) -> None:
        while True:
            try:
                state = self.controller.state
                if self.controller.leader and state is not None and state.status != "rolled_back":
                    self.controller.probes = await run_probes(self.config.probes, self.clients, self.backends, self.metrics)
            except Exception:
                stop_if_cancelled()
                log.exception("known-answer probes failed; retrying at the next interval")
            await pause(self.config.probe_interval_s)

    async def _webhook_loop(self) -> None:
        """The leader delivers the outbox when a change queues an event, and retries at each check interval."""
        ready = self.controller.outbox_ready
        while True:
            stop_if_cancelled()
            with contextlib.suppress(TimeoutError):  # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancel
                async with asyncio.timeout(self.config.check_interval_s):
                    await ready.wait()
            ready.clear()
            try:
                if self.controller.leader:
                    await self.outbox.deliver_due()
            except Exception:
                stop_if_cancelled()
                log.exception("webhook delivery failed; retrying at the next interval")

    # -- routes ----------------------------------------------------------------------
    def _build_app(self) -> Starlette:
        async def on_http_error(request: Request, exc: HTTPException) -> Response:
            kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
            return ApiError(exc.status_code, str(exc.detail), kind).response()

        async def on_api_error(request: Request, exc: ApiError) -> Response:
            return exc.response()

        routes = [
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

    # -- proxy -----------------------------------------------------------------------
    async def _proxy(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        """One completions request; an error before the answer started becomes an OpenAI-shaped one (as CrashGuard)."""
        reply = Reply(send)
        try:
            if scope["method"] != "POST":
                raise ApiError(405, "Method Not Allowed")
            await self._complete(scope, receive, reply, PROXIED[scope["path"]])
        except ApiError as error:
            if not reply.started:
                await reply.error(error, [(b"allow", b"POST")] if error.status == 405 else [])
        except Exception:
            self.crash_log.error("gateway error on %s %s", scope["method"], scope["path"])
            if not reply.started:
                await reply.error(INTERNAL)

    def _parse(self, raw: bytes, endpoint: str) -> dict[str, Any]:
        try:
            body = parse(raw)
            check_request(body, endpoint, self.config.max_tokens_limit)
        except RequestError as error:
            raise ApiError(400, str(error), param=error.param) from error
        model = body.get("model")
        if self.config.models and model not in self.config.models:
            raise ApiError(404, f"model {model!r} does not exist; use one of {self.config.models}", "not_found_error",
                           "model_not_found", "model")
        return body

    def _route(self, scope: dict[str, Any], body: dict[str, Any]) -> tuple[str, bool]:
        """The variant assigned to the request, and whether it carried a user key (else the fallback routes it)."""
        fraction = self.controller.fraction()
        user = body.get("user") or header(scope, self._user_header)  # validated: a string or absent
        if user:
            return assign(self.config.experiment, user, fraction), True
        self.metrics.unkeyed.inc()
        client = scope.get("client")
        if self.config.fallback == "client-ip" and client:
            return assign(self.config.experiment, f"ip:{client[0]}", fraction), False
        if self.config.fallback == "random":
            return (TREATMENT if random.random() < fraction else CONTROL), False
        return CONTROL, False

    async def _complete(self, scope: dict[str, Any], receive: Receive, reply: Reply, endpoint: str) -> None:
        body = self._parse(await read_body(scope, receive, self.config.max_request_bytes), endpoint)
        variant, keyed = self._route(scope, body)
        judged = self.judge.draw(variant, endpoint, body)
        # A judged treatment answer comes with its own log-probabilities, asked here and hidden again below.
        sent = (logprobs.ask(body, endpoint) if judged and self.judge.paired else None) or body
        unkeyed = {} if keyed else {"unkeyed": 1}
        stream = bool(body.get("stream"))
        stage = self.controller.state.stage
        start = time.perf_counter()
        upstream, variant, failover = await self._dispatch(variant, endpoint, scope["path"], sent, stream, stage, start,
                                                           unkeyed)
        if failover:
            self.metrics.failovers.labels(failover).inc()
        headers = [(VARIANT_HEADER.encode(), variant.encode()), (b"x-quantship-experiment", self.config.experiment.encode())]
        if failover:
            headers.append((b"x-quantship-failover", failover.encode()))
        extra = {**unkeyed, **({"failovers.circuit_open": 1} if failover == "circuit_open" else {})}
        response = upstream.response
        if response.status >= 400:  # the backend refused the request: pass it on, judge the rate
            content_type = response.headers.get("content-type", "application/json").encode("latin-1")
            await reply.whole(response.status, upstream.first, content_type, headers)
            rejected = Observation(variant=variant, ts=time.time(), ok=False, rejected=True, latency_s=time.perf_counter() - start)
            self.store.record({f"requests.{variant}": 1, f"client_errors.{variant}": 1, **extra}, rejected)
            self.metrics.requests.labels(variant, endpoint, "client_error").inc()
        elif not stream:
            content = logprobs.strip(upstream.first) if sent is not body else upstream.first
            await reply.whole(200, content, JSON_TYPE, headers)
            reader = upstream.reader
            reader.feed_body(upstream.first)
            self._record(variant, endpoint, stage, reader, time.perf_counter() - start, None, extra)
            if judged and reader.error is None:
                self.judge.offer(variant, endpoint, body, reader)
        else:
            hide = logprobs.StreamStripper() if sent is not body else None
            await self._relay(receive, reply, upstream, variant, endpoint, stage, start, extra, headers,
                              body if judged else None, hide)

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
                    if upstream.response.status < 400:
                        settle = self.breaker.success
                except BackendFailed as error:
                    treatment_error, variant, failover = error, CONTROL, "treatment_failed"
                    log.debug("treatment failed, failing over: %s", error)
            if variant == CONTROL:
                try:
                    upstream = await self._send(CONTROL, path, body, stream)
                except BackendFailed as error:
                    if treatment_error is None:
                        self._record(CONTROL, endpoint, stage, None, time.perf_counter() - start, None, unkeyed)
                    else:
                        self.metrics.requests.labels(CONTROL, endpoint, "error").inc()
                        self._record_both_failed({"requests.control": 1, "errors.control": 1, **unkeyed})
                    raise ApiError(502, f"control backend failed: {error}", "server_error", "backend_unavailable") from error
                if treatment_error is not None and upstream.response.status >= 400:
                    self._record_both_failed({})  # the control's 4xx is recorded with the answer below
                elif treatment_error is not None:  # the control could answer it: the treatment's failure
                    settle = self.breaker.failure
                    self._record(TREATMENT, endpoint, stage, None, time.perf_counter() - start, None,
                                 {"failovers.treatment_failed": 1})
        finally:
            if settle is not None:
                settle()
        return upstream, variant, failover

    def _record_both_failed(self, control: dict[str, int]) -> None:
        """The treatment failed a request the control failed too: the request's fault, counted but judged against neither."""
        counters = {"requests.treatment": 1, "failovers.treatment_failed": 1, "failovers.both_failed": 1, **control}
        self.store.record(counters, None)

    async def _send(self, variant: str, path: str, body: dict[str, Any], stream: bool) -> Upstream:
        """Send and wait for the first body bytes (or the whole body), so that every failure up to there can fail over."""
        payload = json.dumps({**body, "model": self.backends[variant].model}).encode()
        try:
            response = await self.clients[variant].send(path, payload)
        except Unreachable as error:
            raise BackendFailed(str(error)) from error
        if response.status >= 500 or (variant == TREATMENT and response.status == 429):  # 429: overloaded
            response.close()
            raise BackendFailed(f"HTTP {response.status}")
        reader = CompletionReader()
        try:
            if not stream or response.status >= 400:
                content = await response.read()
                response.release()  # the whole body is in: the connection goes back to the pool
                return Upstream(response, content, reader)
            prefix = []  # hold only what precedes the first token (e.g. the role chunk), then commit to this backend
            while not (reader.content_events or reader.finish_reason):
                chunk = await response.content.readany()
                if not chunk:
                    break
                prefix.append(chunk)
                reader.feed(chunk)
        except TRANSPORT_ERRORS as error:
            response.close()
            raise BackendFailed(f"no first token: {type(error).__name__}: {error}") from error
        return Upstream(response, b"".join(prefix), reader)

    async def _relay(
        self, receive: Receive, reply: Reply, upstream: Upstream, variant: str, endpoint: str, stage: int, start: float,
        extra: dict[str, int], headers: list[tuple[bytes, bytes]], judged: dict[str, Any] | None,
        hide: logprobs.StreamStripper | None,
    ) -> None:
        """Forward each chunk as it arrives and observe it after it went out; record once the client has it all.

        `judged` is the client's request when the judge sampled this answer; `hide` strips the
        log-probabilities the gateway asked for. A client that leaves is noticed at the next
        chunk, and its backend connection closed, so the backend stops generating.
        """
        reader = upstream.reader
        # _send held the stream until its first token: that is the time to first token (none: no text at all).
        ttft = time.perf_counter() - start if reader.content_events else None
        response = upstream.response
        left = asyncio.ensure_future(receive())  # done: the client went away (or the response completed)
        unread: list[bytes] = []  # parsed in batches, after they went out
        outcome = "ok"
        try:
            await reply.start(200, [*headers, *_STREAM_HEADERS])
            if out := hide.feed(upstream.first) if hide else upstream.first:
                await reply.chunk(out)
            while chunk := await response.content.readany():
                if out := hide.feed(chunk) if hide else chunk:
                    await reply.chunk(out)
                if left.done():
                    outcome = "left"
                    break
                unread.append(chunk)
                if len(unread) == _PARSE_BATCH:
                    reader.feed(b"".join(unread))
                    unread.clear()
            else:
                await reply.end(hide.flush() if hide else b"")
                reader.feed(b"".join(unread))
        except TRANSPORT_ERRORS as error:
            outcome = "failed"
            message = ApiError(502, f"{variant} backend failed mid-stream: {type(error).__name__}: {error}", "server_error")
            await reply.end(f"data: {json.dumps(message.body())}\n\ndata: [DONE]\n\n".encode())
        except asyncio.CancelledError:
            outcome = "left"
            raise
        finally:
            left.cancel()
            if outcome == "ok":
                response.release()
            else:
                response.close()  # the backend sees the connection go and stops generating
            if outcome == "left":  # nothing to judge
                self.store.record({f"requests.{variant}": 1, "client_disconnects": 1, **extra}, None)
            else:
                if variant == TREATMENT and outcome == "failed":
                    self.breaker.failure()
                latency = time.perf_counter() - start
                self._record(variant, endpoint, stage, reader if outcome == "ok" else None, latency, ttft, extra)
                if judged is not None and outcome == "ok" and reader.error is None:
                    self.judge.offer(variant, endpoint, judged, reader)

    def _record(
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
        self.store.record(counters, observation)

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


def build_app(config: RolloutConfig, store: Store | None = None) -> Gateway:
    return Gateway(config, store)
