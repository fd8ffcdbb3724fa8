"""The floor of the gateway's HTTP stack: a pass-through with nothing but uvicorn and aiohttp.

The same server (uvicorn, uvloop, httptools, plain ASGI) and backend client (aiohttp, one
pooled session) as `quantship rollout serve`, and nothing else: no checks, routing,
observation, metrics or store. benchmarks/gateway.py measures it beside the gateway, so
what the gateway's own work costs is the difference, and what any Python gateway on this
stack costs is this.

    python benchmarks/passthrough.py BACKEND_URL PORT
"""

from __future__ import annotations

import sys

import aiohttp
import uvicorn


def app_for(backend: str):
    session: aiohttp.ClientSession | None = None

    async def lifespan(receive, send) -> None:
        nonlocal session
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1024))
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await session.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def app(scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            return await lifespan(receive, send)
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        async with session.post(backend + scope["path"], data=body, headers={"content-type": "application/json"}) as reply:
            content_type = reply.headers.get("content-type", "application/json").encode("latin-1")
            await send({"type": "http.response.start", "status": reply.status, "headers": [(b"content-type", content_type)]})
            while chunk := await reply.content.readany():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    return app


if __name__ == "__main__":
    uvicorn.run(app_for(sys.argv[1]), host="127.0.0.1", port=int(sys.argv[2]), loop="uvloop", http="httptools",
                log_level="warning")
