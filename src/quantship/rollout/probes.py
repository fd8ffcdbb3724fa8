"""Known-answer probes: the same questions sent to both backends at an interval.

Traffic may not exercise facts the quantized model lost; a probe that the control
answers and the treatment does not is a breach of its own.
"""

from __future__ import annotations

import asyncio
import time

from quantship.rollout.config import Backend, Probe
from quantship.rollout.metrics import Metrics
from quantship.rollout.monitor import ProbeRound
from quantship.rollout.upstream import BackendClient, Unreachable


async def _ask(client: BackendClient, backend: Backend, probe: Probe) -> bool:
    payload: dict = {"model": backend.model, "max_tokens": probe.max_tokens, "temperature": 0}
    if probe.api == "chat":
        payload["messages"] = [{"role": "user", "content": probe.prompt}]
    else:
        payload["prompt"] = probe.prompt
    try:
        response = await client.post_json(f"/v1/{'chat/completions' if probe.api == 'chat' else 'completions'}", payload)
        if response.status != 200:
            return False
        choice = response.json()["choices"][0]
        text = (choice["message"]["content"] if probe.api == "chat" else choice["text"]) or ""
    except (Unreachable, ValueError, KeyError, IndexError, TypeError):
        return False
    return any(expected.lower() in text.lower() for expected in probe.expect)


async def run_probes(
    probes: list[Probe], clients: dict[str, BackendClient], backends: dict[str, Backend], metrics: Metrics
) -> ProbeRound:
    results: dict[str, dict[str, bool]] = {}
    for variant in ("control", "treatment"):
        answers = await asyncio.gather(*(_ask(clients[variant], backends[variant], p) for p in probes))
        results[variant] = {p.prompt: ok for p, ok in zip(probes, answers, strict=True)}
        for ok in answers:
            metrics.probes.labels(variant, "pass" if ok else "fail").inc()
    return ProbeRound(ts=time.time(), control=results["control"], treatment=results["treatment"])
