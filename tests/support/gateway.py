"""Helpers for rollout tests: a fast config, a gateway served for real on loopback, a webhook sink."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from quantship.rollout.config import RolloutConfig
from quantship.rollout.gateway import SERVER, Gateway
from tests.support.openai_stub import free_port

TOKEN = "test-admin-token"


def make_config(tmp_path: Path, control: str, treatment: str, **overrides: Any) -> RolloutConfig:
    """A config with fast checks, so that a rollout decides within a second or two."""
    data: dict[str, Any] = {
        "experiment": "exp1",
        "control": {"url": control, "model": "control-served"},
        "treatment": {"url": treatment, "model": "treatment-served"},
        "models": ["smol"],
        "stages": [
            {"name": "control", "fraction": 0.0},
            {"name": "canary", "fraction": 0.5},
            {"name": "75%", "fraction": 0.75},
            {"name": "full", "fraction": 1.0},
        ],
        "initial_stage": 1,
        "min_samples": 40,
        "min_stage_seconds": 0.5,
        "window_seconds": 30,
        "window_min_samples": 10,
        "check_interval_s": 0.1,
        "flush_interval_s": 0.1,
        "breach_checks": 3,
        "store": f"sqlite:///{tmp_path / 'rollout.db'}",
        "port": 0,
        "timeouts": {"connect_s": 1, "read_s": 5, "webhook_s": 2},
        "breaker": {"failures": 3, "reset_s": 60},
    }
    data.update(overrides)
    return RolloutConfig.model_validate(data)


class GatewayServer:
    """A Gateway served by uvicorn in a thread (lifespan on, so the monitor runs)."""

    def __init__(self, config: RolloutConfig, gateway: Gateway | None = None):
        self.gateway = gateway or Gateway(config)
        self.port = free_port()
        self._server = uvicorn.Server(
            uvicorn.Config(self.gateway.app, host="127.0.0.1", port=self.port, log_level="critical", timeout_graceful_shutdown=1,
                           timeout_keep_alive=int(config.timeouts.client_keep_alive_s), **SERVER)
        )
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> GatewayServer:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            assert self._thread.is_alive() and time.monotonic() < deadline, "gateway did not start"
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        if exc[0] is None:  # a shutdown that hangs (a background task that ignores its cancel) is a bug
            assert not self._thread.is_alive(), "gateway did not shut down"

    def admin(self, action: str, **body: Any) -> dict[str, Any]:
        headers = {"authorization": f"Bearer {TOKEN}"}
        if action in ("status", "audit"):
            response = httpx.get(f"{self.url}/admin/{action}", headers=headers, timeout=10)
        else:
            response = httpx.post(f"{self.url}/admin/{action}", headers=headers, json=body, timeout=10)
        response.raise_for_status()
        return response.json()

    def wait_for(self, predicate, timeout_s: float = 20) -> dict[str, Any]:
        """Poll status until `predicate(status)`; fail the test after `timeout_s` (a hang guard, not a speed check)."""
        deadline = time.monotonic() + timeout_s
        while True:
            status = self.admin("status")
            if predicate(status):
                return status
            assert time.monotonic() < deadline, f"condition never met; last status: {json.dumps(status)[:2000]}"
            time.sleep(0.05)


_CLIENT = httpx.Client(timeout=20)  # one client: building one per call costs more than the request


def chat(url: str, user: str, stream: bool = False, model: str = "smol", **extra: Any) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "Tell me about the mill."}], "user": user,
            "stream": stream, **extra}
    return _CLIENT.post(f"{url}/v1/chat/completions", json=body)


class WebhookSink:
    """Records JSON POST bodies, like a Slack/PagerDuty endpoint would receive them.

    `down` answers 503 without keeping anything (a receiver that is down or restarting);
    `lose_acks` keeps that many events but answers 500 (the sender cannot know it arrived).
    """

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.attempted_ids: list[str | None] = []  # every POST, taken or not
        self.attempts = 0
        self.down = False
        self.lose_acks = 0
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", 0))
                body = json.loads(self.rfile.read(length))
                sink.attempts += 1
                sink.attempted_ids.append(body.get("id"))
                status = 204
                if sink.down:
                    status = 503
                else:
                    sink.events.append(body)
                    if sink.lose_acks:
                        sink.lose_acks -= 1
                        status = 500
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hook"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def unique(self) -> list[dict[str, Any]]:
        """The events as a receiver that deduplicates by event id sees them."""
        seen: dict[str, dict[str, Any]] = {}
        for event in self.events:
            seen.setdefault(event["id"], event)
        return list(seen.values())

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def start_gateway_process(config_path: Path, port: int, log: Path) -> subprocess.Popen:
    """`quantship rollout serve` as its own process (to be SIGKILLed), once /health answers."""
    env = {**os.environ, "QUANTSHIP_ROLLOUT_TOKEN": TOKEN}
    cmd = [sys.executable, "-m", "quantship.cli", "rollout", "serve", "--config", str(config_path), "--port", str(port)]
    process = subprocess.Popen(cmd, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        assert process.poll() is None, log.read_text()
        assert time.monotonic() < deadline, "gateway did not come up"
        time.sleep(0.1)
