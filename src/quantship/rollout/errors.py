"""The gateway's errors as clients see them: OpenAI-shaped, and never a dropped connection.

Starlette answers an unexpected exception with a 500 and then re-raises it into the
server, which closes the keep-alive connection and drops the requests queued on it
(and logs the traceback twice). `CrashGuard` answers the 500 itself and logs one
traceback per `interval_s` at most, with a count of the ones it held back.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from starlette.responses import JSONResponse

log = logging.getLogger("quantship.rollout")


class ApiError(Exception):
    """An OpenAI-shaped error response: {"error": {"message", "type", "param", "code"}}."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.code, self.param = status, message, kind, code, param

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code or self.status}}

    def response(self, headers: dict[str, str] | None = None) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=headers)


INTERNAL = ApiError(500, "internal gateway error; see the gateway log", "server_error")


class CrashLog:
    """One traceback per interval, so a request that crashes the gateway cannot flood its log."""

    def __init__(self, interval_s: float = 60.0, clock=time.monotonic):
        self.interval_s = interval_s
        self._clock = clock
        self._last: float | None = None
        self.suppressed = 0

    def error(self, message: str, *args: Any) -> None:
        now = self._clock()
        if self._last is not None and now - self._last < self.interval_s:
            self.suppressed += 1
            return
        held, self.suppressed, self._last = self.suppressed, 0, now
        log.error(message + " (%d similar errors not logged in the last %.0fs)", *args, held, self.interval_s, exc_info=True)


class CrashGuard:
    """ASGI middleware: an exception before the response started becomes an OpenAI 500 on a live connection."""

    def __init__(self, app, crash_log: CrashLog | None = None):
        self.app = app
        self.crash_log = crash_log or CrashLog()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception:
            self.crash_log.error("gateway error on %s %s", scope.get("method"), scope.get("path"))
            if not started:
                await INTERNAL.response()(scope, receive, send)
