"""Done-when fault test: 2,000 requests, treatment SIGKILLed midway, gateway kill -9 and restart."""

from __future__ import annotations

import asyncio
import json
import signal
import time

import httpx
import yaml

from tests.support.gateway import TOKEN, make_config, start_gateway_process
from tests.support.openai_stub import OpenAIStub, StubProcess, free_port

TOTAL = 2000
KILL_AT = 1000
CONCURRENCY = 32


def _status(port: int) -> dict:
    response = httpx.get(f"http://127.0.0.1:{port}/admin/status", headers={"authorization": f"Bearer {TOKEN}"}, timeout=10)
    response.raise_for_status()
    return response.json()


async def _one(client: httpx.AsyncClient, url: str, i: int) -> str:
    """'ok', or 'error:<status>' for an explicit error; exceptions (hangs, resets) propagate."""
    stream = i % 2 == 0
    body = {"model": "smol", "messages": [{"role": "user", "content": f"question {i}"}], "user": f"user-{i % 500}", "stream": stream}
    if not stream:
        response = await client.post(url, json=body)
        return "ok" if response.status_code == 200 and response.json()["choices"] else f"error:{response.status_code}"
    async with client.stream("POST", url, json=body) as response:
        text = (await response.aread()).decode()
    if response.status_code != 200:
        return f"error:{response.status_code}"
    assert text.endswith("data: [DONE]\n\n"), text[-200:]
    return "error:mid-stream" if '"error"' in text else "ok"


async def _load(url: str, on_progress) -> list[str]:
    results: list[str] = []
    queue = iter(range(TOTAL))
    async with httpx.AsyncClient(timeout=httpx.Timeout(30.0), limits=httpx.Limits(max_connections=CONCURRENCY)) as client:
        async def worker() -> None:
            for i in queue:
                results.append(await _one(client, url, i))
                on_progress(len(results))

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return results


def test_two_thousand_requests_survive_a_treatment_crash_and_a_gateway_kill(tmp_path):
    with OpenAIStub(tokens=4, model="control-served") as control, StubProcess(tokens=4, model="treatment-served") as treatment:
        config = make_config(tmp_path, control.url, treatment.url, auto_promote=False,
                             timeouts={"connect_s": 1, "read_s": 5, "webhook_s": 1})
        config_path = tmp_path / "rollout.yaml"
        config_path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
        port = free_port()
        log = tmp_path / "gateway.log"
        gateway = start_gateway_process(config_path, port, log)
        try:
            def on_progress(done: int) -> None:
                if done == KILL_AT:
                    treatment.kill()  # SIGKILL: in-flight streams are cut, the port refuses

            results = asyncio.run(_load(f"http://127.0.0.1:{port}/v1/chat/completions", on_progress))
            assert len(results) == TOTAL  # every request came back (a hang would have raised a timeout)
            assert results.count("ok") >= TOTAL - CONCURRENCY  # only streams cut mid-flight may fail, explicitly
            assert all(r in ("ok", "error:mid-stream") for r in results), set(results)

            deadline = time.monotonic() + 20
            while (before := _status(port))["status"] != "rolled_back":
                assert time.monotonic() < deadline, before
                time.sleep(0.1)
            audit = httpx.get(f"http://127.0.0.1:{port}/admin/audit", headers={"authorization": f"Bearer {TOKEN}"}).json()
            rollbacks = [e for e in audit["events"] if e["action"] == "rollback"]
            assert len(rollbacks) == 1 and rollbacks[0]["consecutive_breaches"] == config.breach_checks
            counters = before["counters"]
            answered = counters["requests.control"] + counters["requests.treatment"] - counters.get("failovers.treatment_failed", 0)
            assert answered == TOTAL
            assert counters.get("failovers.treatment_failed", 0) + counters.get("failovers.circuit_open", 0) > 0
        finally:
            gateway.send_signal(signal.SIGKILL)
            gateway.wait(timeout=10)

        gateway = start_gateway_process(config_path, port, log)
        try:
            after = _status(port)
            for key in ("stage", "stage_name", "status", "treatment_fraction", "counters", "reasons"):
                assert after[key] == before[key], (key, json.dumps(after[key]), json.dumps(before[key]))
            assert chat_variant(port) == "control"
        finally:
            gateway.send_signal(signal.SIGKILL)
            gateway.wait(timeout=10)


def chat_variant(port: int) -> str:
    body = {"model": "smol", "messages": [{"role": "user", "content": "hi"}], "user": "anyone"}
    return httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body, timeout=10).headers["x-quantship-variant"]
