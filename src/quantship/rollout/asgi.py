"""Plain ASGI for the two proxied routes: the request body in, the answer out, nothing between.

Starlette's Request/StreamingResponse cost a task group per stream and three middleware
wrappers per chunk (docs/rollout.md, "Performance"); the completions routes are most of
the traffic, so they speak ASGI directly and Starlette keeps the rest.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from quantship.rollout.errors import ApiError

Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]
JSON_TYPE = b"application/json"
SSE_TYPE = b"text/event-stream; charset=utf-8"


def header(scope: dict[str, Any], name: bytes) -> str | None:
    """A request header by lower-case name (ASGI servers lower-case them), or None."""
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


async def read_body(scope: dict[str, Any], receive: Receive, limit: int) -> bytes:
    """The whole request body, refused with 413 past `limit` bytes (declared or sent)."""
    declared = header(scope, b"content-length")
    if declared and declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise _too_big(limit)
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ApiError(400, "client disconnected while sending the request")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _too_big(limit)
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


def _too_big(limit: int) -> ApiError:
    return ApiError(413, f"request body is larger than the gateway limit of {limit} bytes")


class Reply:
    """The client's side of one exchange; `started` once the status line went out."""

    def __init__(self, send: Send):
        self._send = send
        self.started = False

    async def start(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.started = True
        await self._send({"type": "http.response.start", "status": status, "headers": headers})

    async def chunk(self, data: bytes) -> None:
        await self._send({"type": "http.response.body", "body": data, "more_body": True})

    async def end(self, data: bytes = b"") -> None:
        await self._send({"type": "http.response.body", "body": data, "more_body": False})

    async def whole(self, status: int, content: bytes, content_type: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        await self.start(status, [(b"content-type", content_type), (b"content-length", b"%d" % len(content)), *headers])
        await self.end(content)

    async def error(self, error: ApiError, headers: list[tuple[bytes, bytes]] = ()) -> None:
        await self.whole(error.status, error.response().body, JSON_TYPE, list(headers))  # the one OpenAI error encoding
