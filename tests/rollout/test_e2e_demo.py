"""The gateway in front of the demo model served for real by llama.cpp (`quantship serve`).

Both variants point at the same real server: what is tested is the gateway against a
real OpenAI server's SSE framing, usage and answers, and known-answer probes on a real
model. Needs the llama.cpp toolchain (`quantship setup llama.cpp`); skipped otherwise,
failed under CI.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import httpx
import pytest

from tests.support.gateway import GatewayServer, make_config
from tests.support.requires import demo_gguf_or_skip, requires

pytestmark = [pytest.mark.e2e, requires("llama.cpp")]


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory):
    gguf = demo_gguf_or_skip()
    run_dir = tmp_path_factory.mktemp("serve")
    argv = [sys.executable, "-c", "from quantship.cli import main; main()", "serve", "--model", str(gguf),
            "--port", "0", "--parallel", "4", "--run-dir", str(run_dir)]
    cli = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "COLUMNS": "200"})
    try:
        base_url = cli.stdout.readline().strip()
        if not base_url.startswith("http://127.0.0.1:"):
            pytest.fail(f"quantship serve did not start: {cli.stderr.read() if cli.poll() is not None else base_url}")
        record = json.loads(next((run_dir / "serve").glob("*.json")).read_text())
        yield base_url, record["served_model_name"]
    finally:
        cli.send_signal(signal.SIGINT)
        try:
            cli.wait(timeout=60)
        except subprocess.TimeoutExpired:
            cli.kill()


def test_gateway_in_front_of_the_real_demo_model(tmp_path, demo_server):
    base_url, served = demo_server
    probes = [{"prompt": "The capital of France is", "expect": ["Paris"], "max_tokens": 8, "api": "completions"}]
    config = make_config(
        tmp_path, base_url, base_url, probes=probes, probe_interval_s=0.5,
        auto_promote=False, window_min_samples=4, timeouts={"connect_s": 2, "read_s": 120, "webhook_s": 1},
    )
    config.control.model = config.treatment.model = served
    with GatewayServer(config) as gw, httpx.Client(timeout=180) as client:
        variants = set()
        for i in range(12):
            body = {"model": "smol", "user": f"user-{i}", "max_tokens": 16, "temperature": 0, "stream": i % 2 == 1,
                    "messages": [{"role": "user", "content": "Name one colour of the sky."}]}
            response = client.post(f"{gw.url}/v1/chat/completions", json=body)
            assert response.status_code == 200
            variants.add(response.headers["x-quantship-variant"])
            if body["stream"]:
                assert response.text.rstrip().endswith("data: [DONE]") and response.text.count("data: ") > 3
            else:
                assert response.json()["choices"][0]["message"]["content"]
        assert variants == {"control", "treatment"}
        status = gw.wait_for(lambda s: s["probes"] is not None and s["last_check"] is not None, timeout_s=120)
        assert status["probes"]["control"] == status["probes"]["treatment"] == {"The capital of France is": True}
        assert status["status"] == "running" and status["counters"]["tokens.treatment"] > 0
