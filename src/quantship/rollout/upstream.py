"""The gateway's connections to one backend: aiohttp, one pool per backend.

Every proxied byte passes through this client: with httpx + httpcore it was the largest
share of the gateway's CPU (38%, docs/rollout.md "Performance"); aiohttp's C parser and
single-layer stream reader cost a quarter of that. The same pool serves the judge and the
probes, so a backend's address, key, timeouts and cookie policy are set here once.
"""

from __future__ import annotations

import json
import os
from typing import Any

import aiohttp

from quantship.rollout.config import Backend, Timeouts

# Transport failures: refused, reset, timed out, a keep-alive connection the server had just closed.
TRANSPORT_ERRORS = (aiohttp.ClientError, TimeoutError)
_KEEPALIVE_S = 2.0  # under the 5 s after which vLLM's and llama-server's HTTP servers close idle connections


class Unreachable(Exception):
    """No HTTP answer from the backend: refused, reset or timed out."""


class Reply:
    """A whole (small) backend answer, for the judge and the probes."""

    def __init__(self, status: int, content: bytes):
        self.status, self.content = status, content

    def json(self) -> Any:
        return json.loads(self.content)  # ValueError when it is not JSON


class BackendClient:
    def __init__(self, backend: Backend, timeouts: Timeouts):
        self.url = backend.url
        self.headers = {"content-type": "application/json"}
        key = os.environ.get(backend.api_key_env) if backend.api_key_env else None
        if key:
            self.headers["authorization"] = f"Bearer {key}"
        # sock_read: the longest silence between bytes; connect also bounds the wait for a pooled connection.
        self.timeout = aiohttp.ClientTimeout(total=None, connect=timeouts.connect_s, sock_read=timeouts.read_s)
        self.session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        connector = aiohttp.TCPConnector(limit=1024, keepalive_timeout=_KEEPALIVE_S, ttl_dns_cache=300)
        # No cookie jar: a backend's Set-Cookie must never be replayed on another user's request.
        self.session = aiohttp.ClientSession(connector=connector, timeout=self.timeout, cookie_jar=aiohttp.DummyCookieJar(),
                                             auto_decompress=True, raise_for_status=False)

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()

    async def send(self, path: str, payload: bytes, timeout_s: float | None = None) -> aiohttp.ClientResponse:
        """POST and return once the status and headers arrived; the caller reads (or closes) the body.

        A connection error is tried once more (a pooled connection the server had just closed
        looks like one); a second one, or a timeout, raises Unreachable.
        """
        timeout = aiohttp.ClientTimeout(total=timeout_s, connect=self.timeout.connect) if timeout_s else self.timeout
        retried = False
        while True:
            try:
                return await self.session.post(self.url + path, data=payload, headers=self.headers, timeout=timeout)
            except aiohttp.ClientConnectionError as error:
                if retried or isinstance(error, TimeoutError):
                    raise Unreachable(f"{type(error).__name__}: {error}") from error
                retried = True
            except TimeoutError as error:
                raise Unreachable(f"timed out: {error}") from error

    async def post_json(self, path: str, body: dict[str, Any], timeout_s: float | None = None) -> Reply:
        """POST a JSON body and read the whole answer (the judge's and the probes' small calls)."""
        response = await self.send(path, json.dumps(body).encode(), timeout_s)
        try:
            content = await response.read()
        except TRANSPORT_ERRORS as error:
            raise Unreachable(f"{type(error).__name__}: {error}") from error
        finally:
            response.release()
        return Reply(response.status, content)
