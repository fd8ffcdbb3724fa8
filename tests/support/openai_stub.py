"""A real OpenAI-compatible HTTP server on loopback, for tests and benchmarks.

Gateway, bench and serving tests need backends that behave like vLLM or
llama.cpp's server over real sockets (SSE framing, usage, HTTP errors, dead
ports), and that can be told to misbehave on purpose. This stub serves
`/v1/chat/completions`, `/v1/completions` (JSON and SSE streaming), `/v1/models`,
`/health` and a Prometheus `/metrics`, and its behaviour can change at any time.

Modes:
    normal  fluent, non-repetitive text (known-answer prompts get their answer)
    loop    a repeated n-gram ("I think that I think that ...")
    refuse  "I'm sorry, I can't help with that."
    short   three words
    slow    normal text with delays (defaults 0.25 s first token, 0.01 s per token)
    error   HTTP 500 with an OpenAI-shaped error body
    reject  HTTP `reject_status` (default 400, e.g. 429) with an OpenAI-shaped error body
    die     stop serving: open streams are cut, new connections are refused

In-process (a uvicorn thread):

    with OpenAIStub(mode="normal", tokens=16, token_delay_s=0.0) as stub:
        stub.url                 # "http://127.0.0.1:PORT"
        stub.base_url            # "http://127.0.0.1:PORT/v1"
        stub.set_mode("loop")    # takes effect on the next request
        stub.set_mode("slow", first_token_delay_s=0.5)
        stub.requests            # completions requests answered so far

As a separate process that can be SIGKILLed (a real crash):

    with StubProcess(mode="normal", tokens=8) as proc:
        proc.url; proc.set_mode("refuse"); proc.kill()

Either can also be driven over HTTP: `POST /stub/control` with a JSON body of
any `Behaviour` fields, `GET /stub/state` for the current behaviour and counts.
Command line: `python tests/support/openai_stub.py --port 0 --mode normal`
prints `LISTENING <port>` once it accepts connections.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import (
    JSONResponse,
    PlainTextResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route

MODES = ("normal", "loop", "refuse", "short", "slow", "error", "reject", "die", "drift")

# Varied English, so that a repetition detector sees no loop in normal output.
_FLUENT = (
    "The river bends past the old mill where farmers once brought grain each autumn. "
    "Today a small museum keeps the wheel turning for visitors, and children watch "
    "water lift wooden paddles while guides explain how millstones ground wheat into "
    "flour. Nearby, a bakery sells bread made with that flour, and travellers often "
    "stop for coffee before walking the forest trail toward the northern hills, "
    "where quiet lakes reflect pine trees, distant mountains, bright clouds and "
    "migrating geese during clear September mornings across this peaceful valley region."
).split()
# Fluent too, but words the normal mode never says: only a judge that knows the normal
# output (the `scorer` stub finds these unlikely) can tell it from the normal mode.
_DRIFT = (
    "Copper kettles whistle inside narrow kitchens whenever sailors recount legends about "
    "emerald harbours, silver lighthouses, stubborn goats, velvet curtains and forgotten "
    "violins hidden beneath creaky staircases of crumbling seaside mansions."
).split()
_LIKELY, _UNLIKELY = -0.5, -4.0  # the scorer's log-probability of a word the normal mode says, and of any other
_OWN = -0.5  # the log-probability every mode gives its own words (as sure of drift as of normal text)
_LOOP = "I think that".split()
_REFUSAL = "I'm sorry, I can't help with that.".split()
_SHORT = "Okay, sure thing.".split()
DEFAULT_ANSWERS = {
    "capital of france": "The capital of France is Paris.",
    "2 + 2": "2 + 2 = 4.",
    "opposite of hot": "The opposite of hot is cold.",
}
_SLOW_FIRST_S = 0.25
_SLOW_TOKEN_S = 0.01


@dataclasses.dataclass
class Behaviour:
    """What the stub does on the next request; every field can change at run time."""

    mode: str = "normal"
    tokens: int = 16  # words generated when max_tokens does not cut earlier
    token_delay_s: float = 0.0
    first_token_delay_s: float = 0.0
    model: str = "stub-model"
    answers: dict[str, str] = dataclasses.field(default_factory=lambda: dict(DEFAULT_ANSWERS))
    always_usage: bool = True  # send a usage chunk when streaming even without stream_options
    reject_status: int = 400  # the status of mode "reject"
    fail_on_field: str | None = None  # answer 500 to any request with this field (input a backend chokes on)
    set_cookie: str | None = None  # a Set-Cookie header on every completion, as session-keeping servers send
    scorer: bool = False  # serve vLLM's /tokenize and `prompt_logprobs`, as a control that can judge answers
    score_delay_s: float = 0.0  # delay of each /tokenize answer (a slow judge)
    logprobs: bool = True  # send each word's log-probability when a request asks (`logprobs`), as vLLM does

    def update(self, **changes: Any) -> None:
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ValueError(f"unknown stub settings: {sorted(unknown)}")
        if "mode" in changes and changes["mode"] not in MODES:
            raise ValueError(f"unknown mode {changes['mode']!r}; use one of {MODES}")
        for key, value in changes.items():
            setattr(self, key, value)

    def delays(self) -> tuple[float, float]:
        if self.mode == "slow":
            return (self.first_token_delay_s or _SLOW_FIRST_S, self.token_delay_s or _SLOW_TOKEN_S)
        return self.first_token_delay_s, self.token_delay_s


def _words_for(behaviour: Behaviour, prompt: str, max_tokens: int | None) -> tuple[list[str], str]:
    """The words to emit and the finish reason, from the mode and the prompt."""
    limit = behaviour.tokens if max_tokens is None else min(behaviour.tokens, max_tokens)
    mode = behaviour.mode
    if mode in ("normal", "slow"):
        lowered = prompt.lower()
        for key, answer in behaviour.answers.items():
            if key in lowered:
                words = answer.split()
                return words[:limit], "stop" if len(words) <= limit else "length"
        words = [_FLUENT[i % len(_FLUENT)] for i in range(behaviour.tokens)]
    elif mode == "drift":
        words = [_DRIFT[i % len(_DRIFT)] for i in range(behaviour.tokens)]
    elif mode == "loop":
        words = [_LOOP[i % len(_LOOP)] for i in range(behaviour.tokens)]
    elif mode == "refuse":
        return _REFUSAL[:limit], "stop" if len(_REFUSAL) <= limit else "length"
    else:  # short
        return _SHORT[:limit], "stop"
    return words[:limit], "length" if limit < len(words) or mode == "loop" else "stop"


def _prompt_text(body: dict[str, Any], chat: bool) -> str:
    if not chat:
        prompt = body.get("prompt", "")
        return " ".join(prompt) if isinstance(prompt, list) else str(prompt)
    parts = []
    for message in body.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "\n".join(parts)


class _StubApp:
    """The Starlette app plus the counters that tests read."""

    def __init__(self, behaviour: Behaviour):
        self.behaviour = behaviour
        self.requests = 0
        self.by_mode: dict[str, int] = {}
        self.headers_seen: list[dict[str, str]] = []  # request headers of each completion request
        self.vocab: dict[str, int] = {}  # word -> token id, for the scorer
        self.dead = False
        self.on_die: Any = None
        self.app = Starlette(
            routes=[
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
                Route("/v1/completions", self._completions, methods=["POST"]),
                Route("/v1/models", self._models, methods=["GET"]),
                Route("/tokenize", self._tokenize, methods=["POST"]),
                Route("/health", self._health, methods=["GET"]),
                Route("/metrics", self._metrics, methods=["GET"]),
                Route("/stub/control", self._control, methods=["POST"]),
                Route("/stub/state", self._state, methods=["GET"]),
            ]
        )

    async def _chat(self, request: Request) -> Response:
        return await self._generate(request, chat=True)

    async def _completions(self, request: Request) -> Response:
        return await self._generate(request, chat=False)

    async def _generate(self, request: Request, chat: bool) -> Response:
        self.headers_seen.append(dict(request.headers))
        response = await self._answer(request, chat)
        if self.behaviour.set_cookie:
            response.headers.append("set-cookie", self.behaviour.set_cookie)
        return response

    async def _answer(self, request: Request, chat: bool) -> Response:
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise ValueError("body is not an object")
        except (ValueError, json.JSONDecodeError):
            return _error(400, "request body must be a JSON object", "invalid_request_error")
        behaviour = self.behaviour
        mode = behaviour.mode
        self.requests += 1
        self.by_mode[mode] = self.by_mode.get(mode, 0) + 1
        if mode == "die":
            self._die()
            raise ConnectionAbortedError("stub is dead")
        if mode == "error" or (behaviour.fail_on_field and behaviour.fail_on_field in body):
            return _error(500, "stub told to fail", "server_error")
        if mode == "reject":
            return _error(behaviour.reject_status, "stub told to reject", "invalid_request_error")
        if behaviour.scorer and not chat and body.get("prompt_logprobs") is not None:
            return JSONResponse(self._score(body["prompt"]))
        prompt = _prompt_text(body, chat)
        words, finish = _words_for(behaviour, prompt, body.get("max_tokens"))
        first_delay, token_delay = behaviour.delays()
        usage = {
            "prompt_tokens": len(prompt.split()),
            "completion_tokens": len(words),
            "total_tokens": len(prompt.split()) + len(words),
        }
        ident = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}"
        model = body.get("model") or behaviour.model
        if body.get("stream"):
            options = body.get("stream_options") or {}
            with_usage = bool(options.get("include_usage", behaviour.always_usage))
            asked = behaviour.logprobs and body.get("logprobs") not in (None, False)
            stream = self._stream(ident, model, chat, words, finish, usage, with_usage, first_delay, token_delay, asked)
            return StreamingResponse(stream, media_type="text/event-stream")
        await asyncio.sleep(first_delay + token_delay * max(len(words) - 1, 0))
        if self.dead:
            raise ConnectionAbortedError("stub is dead")
        text = " ".join(words)
        asked = behaviour.logprobs and body.get("logprobs") not in (None, False)
        pieces = [w if i == 0 else " " + w for i, w in enumerate(words)]
        choice: dict[str, Any] = {"index": 0, "finish_reason": finish, "logprobs": _logprobs(pieces, chat) if asked else None}
        if chat:
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice["text"] = text
        return JSONResponse(
            {
                "id": ident,
                "object": "chat.completion" if chat else "text_completion",
                "created": int(time.time()),
                "model": model,
                "choices": [choice],
                "usage": usage,
            }
        )

    async def _stream(
        self, ident, model, chat, words, finish, usage, with_usage, first_delay, token_delay, asked
    ) -> AsyncIterator[bytes]:
        obj = "chat.completion.chunk" if chat else "text_completion"
        created = int(time.time())

        def chunk(choices: list[dict[str, Any]], **extra: Any) -> bytes:
            payload = {"id": ident, "object": obj, "created": created, "model": model, "choices": choices, **extra}
            return f"data: {json.dumps(payload)}\n\n".encode()

        if chat:
            yield chunk([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
        for i, word in enumerate(words):
            await asyncio.sleep(first_delay if i == 0 else token_delay)
            if self.dead:
                raise ConnectionAbortedError("stub died mid-stream")
            piece = word if i == 0 else " " + word
            body = {"delta": {"content": piece}} if chat else {"text": piece}
            if asked:
                body["logprobs"] = _logprobs([piece], chat)
            yield chunk([{"index": 0, **body, "finish_reason": None}])
        last = {"delta": {}} if chat else {"text": ""}
        yield chunk([{"index": 0, **last, "finish_reason": finish}])
        if with_usage:
            yield chunk([], usage=usage)
        yield b"data: [DONE]\n\n"

    async def _tokenize(self, request: Request) -> Response:
        """vLLM's /tokenize, one id per word; a chat renders as `<role>` words and contents."""
        if not self.behaviour.scorer:
            return _error(404, "Not Found", "not_found_error")
        await asyncio.sleep(self.behaviour.score_delay_s)
        body = await request.json()
        if "messages" in body:
            words = [w for m in body["messages"] for w in (f"<{m['role']}>", *str(m.get("content") or "").split())]
            if body.get("add_generation_prompt", True):
                words.append("<assistant>")
        else:
            words = ["<s>", *body["prompt"].split()]
        return JSONResponse({"tokens": [self.vocab.setdefault(w, len(self.vocab)) for w in words], "count": len(words)})

    def _score(self, ids: list[int]) -> dict[str, Any]:
        """A completion whose `prompt_logprobs` find the normal mode's words likely and every other word not."""
        words = {i: w for w, i in self.vocab.items()}
        likely = set(_FLUENT)
        entries = [None] + [{str(i): {"logprob": _LIKELY if words.get(i) in likely else _UNLIKELY, "rank": 1}} for i in ids[1:]]
        return {"object": "text_completion", "choices": [{"index": 0, "text": "", "finish_reason": "length",
                                                          "prompt_logprobs": entries}]}

    async def _models(self, request: Request) -> Response:
        model = {"id": self.behaviour.model, "object": "model", "created": 0, "owned_by": "quantship-stub"}
        return JSONResponse({"object": "list", "data": [model]})

    async def _health(self, request: Request) -> Response:
        if self.behaviour.mode == "error":
            return PlainTextResponse("unhealthy", status_code=500)
        return PlainTextResponse("ok")

    async def _metrics(self, request: Request) -> Response:
        lines = [
            "# HELP stub_requests_total Completion requests answered, by mode.",
            "# TYPE stub_requests_total counter",
        ]
        lines += [f'stub_requests_total{{mode="{m}"}} {n}' for m, n in sorted(self.by_mode.items())]
        return PlainTextResponse("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")

    async def _control(self, request: Request) -> Response:
        try:
            self.behaviour.update(**(await request.json()))
        except (ValueError, TypeError) as error:
            return _error(400, str(error), "invalid_request_error")
        if self.behaviour.mode == "die":
            self._die()
        return await self._state(request)

    async def _state(self, request: Request) -> Response:
        return JSONResponse({**dataclasses.asdict(self.behaviour), "requests": self.requests, "by_mode": self.by_mode})

    def _die(self) -> None:
        self.dead = True
        if self.on_die is not None:
            self.on_die()


def _logprobs(pieces: list[str], chat: bool) -> dict[str, Any]:
    """Each piece's log-probability in the shape vLLM answers: chat `content`, legacy completions lists."""
    if chat:
        return {"content": [{"token": p, "logprob": _OWN, "bytes": list(p.encode()), "top_logprobs": []} for p in pieces]}
    return {"tokens": pieces, "token_logprobs": [_OWN] * len(pieces), "top_logprobs": [None] * len(pieces),
            "text_offset": [0] * len(pieces)}


def _error(status: int, message: str, kind: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "param": None, "code": status}}, status_code=status)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class OpenAIStub:
    """The stub served by uvicorn in a background thread of this process."""

    def __init__(self, port: int = 0, **behaviour: Any):
        self.behaviour = Behaviour()
        self.behaviour.update(**behaviour)
        self.port = port or free_port()
        self._stub = _StubApp(self.behaviour)
        self._stub.on_die = self._stop_listening
        config = uvicorn.Config(
            self._stub.app, host="127.0.0.1", port=self.port, log_level="critical", lifespan="off",
            timeout_graceful_shutdown=0,
        )
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    @property
    def requests(self) -> int:
        return self._stub.requests

    @property
    def headers_seen(self) -> list[dict[str, str]]:
        return self._stub.headers_seen

    def set_mode(self, mode: str, **settings: Any) -> None:
        self.behaviour.update(mode=mode, **settings)
        if mode == "die":
            self._stub._die()

    def start(self) -> OpenAIStub:
        self._thread = threading.Thread(target=self._server.run, name=f"openai-stub-{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"OpenAI stub did not start on port {self.port}")
            time.sleep(0.01)
        return self

    def _stop_listening(self) -> None:
        self._server.should_exit = True
        self._server.force_exit = True

    def stop(self) -> None:
        self._stub.dead = True
        self._stop_listening()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> OpenAIStub:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class StubProcess:
    """The stub in its own Python process, so that `kill()` is a real SIGKILL."""

    def __init__(self, port: int = 0, **behaviour: Any):
        Behaviour().update(**behaviour)  # fail here, not in the child, on a bad setting
        self._args = [sys.executable, os.path.abspath(__file__), "--port", str(port), "--behaviour", json.dumps(behaviour)]
        self.port = 0
        self.process: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def start(self, timeout_s: float = 20) -> StubProcess:
        self.process = subprocess.Popen(self._args, stdout=subprocess.PIPE, text=True)
        deadline = time.monotonic() + timeout_s
        line = self.process.stdout.readline()  # type: ignore[union-attr]
        if not line.startswith("LISTENING ") or time.monotonic() > deadline:
            self.kill()
            raise RuntimeError(f"stub process did not start: {line!r}")
        self.port = int(line.split()[1])
        return self

    def set_mode(self, mode: str, **settings: Any) -> dict[str, Any]:
        response = httpx.post(f"{self.url}/stub/control", json={"mode": mode, **settings}, timeout=5)
        response.raise_for_status()
        return response.json()

    def state(self) -> dict[str, Any]:
        return httpx.get(f"{self.url}/stub/state", timeout=5).json()

    def kill(self) -> None:
        """SIGKILL: no cleanup, open connections are reset, the port refuses."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def __enter__(self) -> StubProcess:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.kill()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="OpenAI-compatible test stub (loopback only).")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--mode", choices=MODES, default=None)
    parser.add_argument("--behaviour", default="{}", help="JSON object of Behaviour fields")
    args = parser.parse_args(argv)
    settings = json.loads(args.behaviour)
    if args.mode:
        settings["mode"] = args.mode
    stub = OpenAIStub(port=args.port, **settings)
    stub.start()
    print(f"LISTENING {stub.port}", flush=True)
    try:
        while stub._thread is not None and stub._thread.is_alive():
            stub._thread.join(timeout=0.5)
    except KeyboardInterrupt:
        stub.stop()


if __name__ == "__main__":
    main()
