"""LiteLLM's proxy as a plain OpenAI pass-through: the peer of benchmarks/gateway.py.

The issue: compare quantship's rollout gateway with LiteLLM's proxy, another API
gateway, in front of the same stub backend. This module only installs and starts the
peer; the measuring is gateway.py's. LiteLLM pins its own FastAPI, pydantic and
friends, so it lives in a benchmark-only venv (ENV_DIR), never in the project's.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# The newest release whose [proxy] extra pip resolves from PyPI on Python 3.11: 1.108.8 to
# 1.110.2 pin litellm-enterprise, litellm-proxy-extras or litellm-proxy releases that PyPI
# does not have, and no 1.107.x is listed.
LITELLM_VERSION = "1.108.7"
HOME = Path(os.environ.get("QUANTSHIP_HOME") or Path.home() / ".cache" / "quantship").expanduser().absolute()
ENV_DIR = HOME / "bench-envs" / "litellm"
MARKER = ENV_DIR / ".quantship-litellm-version"


def _run(args: list[str], what: str) -> None:
    done = subprocess.run(args, check=False, capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"{what} failed ({last}); fix: check PyPI access, then `rm -rf {ENV_DIR}` and rerun")


def ensure_env() -> Path:
    """The benchmark venv's python, with litellm[proxy]==LITELLM_VERSION installed."""
    python = ENV_DIR / "bin" / "python"
    if python.exists() and MARKER.exists() and MARKER.read_text().strip() == LITELLM_VERSION:
        return python
    print(f"installing litellm[proxy]=={LITELLM_VERSION} into {ENV_DIR} (about 1-2 min, once)", flush=True)
    if not python.exists():
        _run([sys.executable, "-m", "venv", str(ENV_DIR)], f"creating the venv {ENV_DIR}")
    _run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", f"litellm[proxy]=={LITELLM_VERSION}"],
         f"pip install litellm[proxy]=={LITELLM_VERSION}")
    tmp = MARKER.with_name(MARKER.name + ".tmp")
    tmp.write_text(LITELLM_VERSION + "\n")
    os.replace(tmp, MARKER)
    return python


def _config(backend_url: str, model: str) -> dict:
    return {
        "model_list": [{
            "model_name": "bench",
            "litellm_params": {"model": f"openai/{model}", "api_base": f"{backend_url}/v1", "api_key": "sk-bench-dummy",
                               "max_retries": 0},  # the OpenAI client's own retries
        }],
        "litellm_settings": {
            "num_retries": 0, "request_timeout": 60, "callbacks": [], "success_callback": [], "failure_callback": [],
            "turn_off_message_logging": True, "disable_end_user_cost_tracking": True, "disable_hf_tokenizer_download": True,
        },
        "router_settings": {"routing_strategy": "simple-shuffle", "num_retries": 0, "disable_cooldowns": True},
        "general_settings": {
            # No master key means no auth, which LiteLLM refuses unless told: a loopback-only peer.
            "dangerously_permit_weak_or_unset_master_key": True,
            "disable_spend_logs": True, "disable_error_logs": True, "disable_reset_budget": True,
            "background_health_checks": False,
            "disable_model_info_refresh": True,  # else it polls the backend's /v1/models on a timer
        },
    }


def _env() -> dict[str, str]:
    """A bare environment: no inherited DATABASE_URL, REDIS_*, LITELLM_MASTER_KEY, proxies or licence."""
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "TZ")}
    return {
        **keep,
        "LITELLM_LOG": "WARNING",  # also uvicorn's level: no access log line per request, as the gateway runs
        "LITELLM_MODE": "PRODUCTION",  # DEV (the default) loads a .env found by walking up from the package
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # else fetched from GitHub at import
        "LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS": "True",
        "LITELLM_LOCAL_BLOG_POSTS": "True",
        "LITELLM_LOCAL_AUTOROUTER_PRESETS": "True",
        "LITELLM_LOCAL_POLICY_TEMPLATES": "True",
        "LITELLM_TELEMETRY_DISABLED": "true",
        "LITELLM_DONT_SHOW_FEEDBACK_BOX": "true",
        "HF_HUB_OFFLINE": "1",
        "NO_PROXY": "127.0.0.1,localhost",
    }


def _log_tail(log: Path, lines: int = 20) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else "(no log)"


def start_litellm(backend_url: str, model: str, port: int, workdir: Path) -> subprocess.Popen:
    """LiteLLM's proxy on 127.0.0.1:port forwarding model "bench" to `model` at backend_url, once it streams."""
    import httpx
    import yaml

    python = ensure_env()
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "litellm.yaml"
    config.write_text(yaml.safe_dump(_config(backend_url, model), sort_keys=False))
    log = workdir / "litellm.log"
    args = [str(python.parent / "litellm"), "--config", str(config), "--host", "127.0.0.1", "--port", str(port),
            "--num_workers", "1"]
    with open(log, "wb") as out:
        process = subprocess.Popen(args, cwd=workdir, env=_env(), stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL)
    body = {"model": "bench", "messages": [{"role": "user", "content": "ready?"}], "stream": True, "max_tokens": 1}
    deadline, last = time.monotonic() + 90, "no answer"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"litellm exited with {process.returncode} while starting; see {log}:\n{_log_tail(log)}")
        try:
            with httpx.stream("POST", f"http://127.0.0.1:{port}/v1/chat/completions", json=body, timeout=5) as response:
                response.read()
                if response.status_code == 200:
                    return process
                last = f"HTTP {response.status_code}"
        except httpx.HTTPError as error:
            last = type(error).__name__
        time.sleep(0.5)
    process.kill()
    process.wait()
    raise RuntimeError(f"litellm did not answer a streamed chat completion within 90 s ({last}); see {log}:\n{_log_tail(log)}")


def main() -> None:
    import tempfile

    import httpx

    from tests.support.openai_stub import StubProcess, free_port

    with StubProcess(tokens=16, token_delay_s=0.002, scorer=True) as backend, tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        started = time.monotonic()
        proxy = start_litellm(backend.url, "stub-model", port, Path(tmp))
        print(f"litellm {LITELLM_VERSION} ready on 127.0.0.1:{port} in {time.monotonic() - started:.1f} s")
        try:
            body = {"model": "bench", "messages": [{"role": "user", "content": "benchmark"}], "stream": True,
                    "max_tokens": 16, "user": "u1"}
            with httpx.stream("POST", f"http://127.0.0.1:{port}/v1/chat/completions", json=body, timeout=30) as response:
                lines = [line for line in response.iter_lines() if line.startswith("data:")]
            print(f"HTTP {response.status_code}: {len(lines)} SSE data: lines, ends with [DONE]: {lines[-1:] == ['data: [DONE]']}")
        finally:
            proxy.send_signal(signal.SIGTERM)
            print(f"litellm stopped with {proxy.wait(timeout=30)}")


if __name__ == "__main__":
    main()
