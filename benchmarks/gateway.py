"""Added latency and CPU of the rollout gateway, side by side with LiteLLM's proxy, over direct calls.

Starts one OpenAI stub backend (its own process, able to score as a vLLM control does),
`quantship rollout serve` in front of it (control and treatment both that backend, the
canary at 50%, with everything a production gateway runs: the quality monitor, the live
KL judge at the config's default rate, a known-answer probe, Prometheus metrics, the
SQLite store) and the peer, the LiteLLM proxy, as a plain pass-through to the same stub
(benchmarks/litellm_peer.py; its own environment), and the floor of the gateway's own HTTP
stack, a bare uvicorn + aiohttp pass-through (benchmarks/passthrough.py). Sends the same
streaming chat requests directly and through each, at 1, 16 and 64 concurrent streams, in
one run: every path warmed first, then `--rounds` rounds of mirrored turns (direct,
quantship, passthrough, litellm, then backwards) so that drift on a shared machine hits
every path alike.

Per level and path it writes p50/p99 latency and time to first token, their excess over
direct, the gateway's CPU time per request (its whole process tree, counted over every
turn: background work such as scoring and store writes is included), the requests/s it
carried, the capacity per core that CPU figure implies (1000 / CPU ms), and the CPU of
the whole machine (backend, gateways, load generator) per request with the latency that
alone would cause once the cores are saturated (streams x CPU per request / cores). The load
generator is aiohttp, the lightest client here, so that it leaves the 2 cores to what is
measured. No assertions: figures only.

    python benchmarks/gateway.py [--requests-per-stream 60] [--rounds 3] [--tokens 16] [--no-peer]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import psutil
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.litellm_peer import LITELLM_VERSION, ensure_env, start_litellm  # noqa: E402
from quantship.bench.provenance import provenance  # noqa: E402
from quantship.rundir import atomic_write_json  # noqa: E402
from tests.support.gateway import start_gateway_process  # noqa: E402
from tests.support.openai_stub import StubProcess, free_port  # noqa: E402

STUB_MODEL = "stub-model"
CORES = psutil.cpu_count()
_FIRST_TEXT = re.compile(rb'"content": ?"[^"]')  # an SSE event that carries generated text


def _percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


async def measure(url: str, concurrency: int, per_stream: int, tokens: int) -> dict[str, list[float]]:
    """End-to-end latency and TTFT of streamed chat completions, each read to its end; and the turn's wall time."""
    latencies: list[float] = []
    ttfts: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as session:
        async def stream(worker: int) -> None:
            nonlocal errors
            for i in range(per_stream):
                body = {"model": "bench", "messages": [{"role": "user", "content": "benchmark"}],
                        "user": f"user-{worker}-{i}", "stream": True, "max_tokens": tokens}
                start = time.perf_counter()
                first = None
                try:
                    async with session.post(url, json=body) as response:
                        response.raise_for_status()
                        async for chunk in response.content.iter_any():
                            if first is None and _FIRST_TEXT.search(chunk):
                                first = time.perf_counter() - start
                except (aiohttp.ClientError, TimeoutError):
                    errors += 1  # counted, not timed
                    continue
                latencies.append(time.perf_counter() - start)
                ttfts.append(first if first is not None else latencies[-1])

        began = time.perf_counter()
        await asyncio.gather(*(stream(w) for w in range(concurrency)))
        wall = time.perf_counter() - began
    return {"latency": latencies, "ttft": ttfts, "errors": errors, "wall_s": wall}


def _summary(latency: list[float], ttft: list[float], errors: int, wall_s: float) -> dict[str, float]:
    return {
        "requests": len(latency), "errors": errors, "requests_per_s": len(latency) / wall_s if wall_s else 0.0,
        "latency_mean_ms": statistics.fmean(latency) * 1000,
        "latency_p50_ms": statistics.median(latency) * 1000, "latency_p99_ms": _percentile(latency, 0.99) * 1000,
        "ttft_p50_ms": statistics.median(ttft) * 1000, "ttft_p99_ms": _percentile(ttft, 0.99) * 1000,
    }


def _start_quantship(backend: str, port: int, workdir: Path) -> subprocess.Popen:
    config = {
        "experiment": "bench",
        "control": {"url": backend, "model": STUB_MODEL},
        "treatment": {"url": backend, "model": STUB_MODEL},
        "stages": [{"name": "canary", "fraction": 0.5}],
        "store": f"sqlite:///{workdir / 'bench.db'}",
        "probes": [{"prompt": "What is the capital of France?", "expect": ["Paris"]}],
    }
    path = workdir / "rollout.yaml"
    path.write_text(yaml.safe_dump(config))
    return start_gateway_process(path, port, workdir / "gateway.log")


def _start_passthrough(backend: str, port: int) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / "passthrough.py"), backend, str(port)])
    deadline = time.monotonic() + 30
    while True:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return process
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError("the pass-through did not start")
        time.sleep(0.1)


def _tree_cpu_s(process: psutil.Process, tree: bool = True) -> float:
    """User + system seconds of a process and, with `tree`, its children (LiteLLM may fork workers)."""
    total = 0.0
    for p in [process, *(process.children(recursive=True) if tree else [])]:
        try:
            times = p.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--requests-per-stream", type=int, default=60, help="per path and level, over all rounds")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--token-delay-s", type=float, default=0.002)
    parser.add_argument("--no-peer", action="store_true", help="leave LiteLLM out (no benchmark environment to build)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "gateway.json")
    args = parser.parse_args()

    gateway_names = ("quantship", "passthrough") if args.no_peer else ("quantship", "passthrough", "litellm")
    paths = ("direct", *gateway_names)
    turns = [*paths, *reversed(paths)] * args.rounds
    per_turn = max(1, args.requests_per_stream // (2 * args.rounds))
    peer_python = None if args.no_peer else ensure_env()
    results = []
    stub = StubProcess(tokens=args.tokens, token_delay_s=args.token_delay_s, scorer=True)
    with tempfile.TemporaryDirectory() as tmp, stub as backend:
        ports = {name: free_port() for name in gateway_names}
        gateways = {"quantship": _start_quantship(backend.url, ports["quantship"], Path(tmp)),
                    "passthrough": _start_passthrough(backend.url, ports["passthrough"])}
        if peer_python:
            gateways["litellm"] = start_litellm(backend.url, STUB_MODEL, ports["litellm"], Path(tmp))
        cpu = {name: psutil.Process(g.pid) for name, g in gateways.items()}
        everyone = {**cpu, "backend": psutil.Process(backend.process.pid)}
        generator = psutil.Process()  # this process: its children are the servers, counted above
        try:
            targets = {"direct": f"{backend.base_url}/chat/completions",
                       **{name: f"http://127.0.0.1:{port}/v1/chat/completions" for name, port in ports.items()}}
            for url in targets.values():  # warm every path: backend, gateways and their upstream pools
                asyncio.run(measure(url, 8, 10, args.tokens))
            for concurrency in args.concurrency:
                row = {"concurrency": concurrency}
                samples = {name: {"latency": [], "ttft": [], "errors": 0, "wall_s": 0.0} for name in targets}
                spent = dict.fromkeys(gateways, 0.0)
                machine = dict.fromkeys(targets, 0.0)  # CPU of everything on the machine during a path's turns
                for name in turns:  # interleaved, so drift on a shared machine hits every path alike
                    before = {**{g: _tree_cpu_s(p) for g, p in everyone.items()}, "load generator": _tree_cpu_s(generator, tree=False)}
                    turn = asyncio.run(measure(targets[name], concurrency, per_turn, args.tokens))
                    after = {**{g: _tree_cpu_s(p) for g, p in everyone.items()}, "load generator": _tree_cpu_s(generator, tree=False)}
                    for key in ("latency", "ttft"):
                        samples[name][key] += turn[key]
                    samples[name]["errors"] += turn["errors"]
                    samples[name]["wall_s"] += turn["wall_s"]
                    for g in cpu:  # every turn: work queued in one turn may run in the next
                        spent[g] += after[g] - before[g]
                    machine[name] += sum(after.values()) - sum(before.values())
                for name in targets:
                    row[name] = _summary(**samples[name])
                    # Closed loop on a CPU-bound machine: each stream waits its turn for the cores, so the
                    # mean latency cannot be below streams x CPU per request / cores. At or near it, the
                    # excess over direct is CPU the gateway costs, not a queue of its own.
                    row[name]["machine_cpu_ms_per_request"] = 1000 * machine[name] / max(row[name]["requests"], 1)
                    row[name]["cpu_bound_latency_ms"] = concurrency * row[name]["machine_cpu_ms_per_request"] / CORES
                for name in gateways:
                    cpu_ms = 1000 * spent[name] / max(row[name]["requests"], 1)
                    row[name]["cpu_ms_per_request"] = cpu_ms
                    row[name]["capacity_per_core_rps"] = 1000 / cpu_ms if cpu_ms else None
                    for stat in ("latency_p50_ms", "latency_p99_ms", "ttft_p50_ms", "ttft_p99_ms"):
                        row[name][f"added_{stat}"] = row[name][stat] - row["direct"][stat]
                results.append(row)
                print(f"{concurrency:>3} streams: direct p50 {row['direct']['latency_p50_ms']:7.2f} ms; "
                      + "; ".join(f"{name} +{row[name]['added_latency_p50_ms']:.2f} ms p50 (p99 +{row[name]['added_latency_p99_ms']:.2f}),"
                                  f" CPU {row[name]['cpu_ms_per_request']:.2f} ms/req, {row[name]['requests_per_s']:.0f} req/s"
                                  for name in gateways), flush=True)
        finally:
            for gateway in gateways.values():
                gateway.send_signal(signal.SIGTERM)
                gateway.wait(timeout=30)
    report = {
        "benchmark": "API gateway added latency and CPU (streamed chat completions, same stub backend)",
        "settings": vars(args) | {"out": str(args.out), "turns": turns, "requests_per_turn_per_stream": per_turn,
                                  "peer": None if args.no_peer else f"litellm[proxy]=={LITELLM_VERSION}"},
        **provenance(),
        "results": results,
    }
    atomic_write_json(args.out, report)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
