"""Added latency of the rollout gateway over direct calls to the same backend.

Starts one OpenAI stub backend (its own process) and one `quantship rollout serve`
gateway (its own process) whose control and treatment both point at that backend,
then sends the same streaming chat requests directly and through the gateway at
1, 16 and 64 concurrent streams, in one run: both paths warmed first, then in ABBA
turns (direct, gateway, gateway, direct) so that drift cancels. Prints a table and writes JSON
(default benchmarks/results/gateway.json), with the gateway's CPU time per request,
which is steadier than wall time on a busy machine. No assertions: figures only.

    python benchmarks/gateway.py [--requests-per-stream 20] [--tokens 16] [--token-delay-s 0.002]
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from quantship.bench.provenance import provenance  # noqa: E402
from quantship.rundir import atomic_write_json  # noqa: E402
from tests.support.openai_stub import StubProcess, free_port  # noqa: E402


# Each turn sends half of --requests-per-stream per stream.
ABBA = ("direct", "gateway", "gateway", "direct")


def _percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


async def _measure(url: str, concurrency: int, per_stream: int, tokens: int) -> dict[str, list[float]]:
    """End-to-end latency and TTFT of streamed chat completions, each read to [DONE]."""
    latencies: list[float] = []
    ttfts: list[float] = []
    errors: list[float] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        async def stream(worker: int) -> None:
            for i in range(per_stream):
                body = {"model": "bench", "messages": [{"role": "user", "content": "benchmark"}],
                        "user": f"user-{worker}-{i}", "stream": True, "max_tokens": tokens}
                start = time.perf_counter()
                first = None
                try:
                    async with client.stream("POST", url, json=body) as response:
                        response.raise_for_status()
                        async for chunk in response.aiter_raw():
                            if first is None and b'"content": "' in chunk and b'"content": ""' not in chunk:
                                first = time.perf_counter() - start
                except httpx.HTTPError:
                    errors.append(time.perf_counter() - start)  # counted, not timed
                    continue
                latencies.append(time.perf_counter() - start)
                ttfts.append(first if first is not None else latencies[-1])

        await asyncio.gather(*(stream(w) for w in range(concurrency)))
    return {"latency": latencies, "ttft": ttfts, "errors": errors}


def _summary(samples: dict[str, list[float]]) -> dict[str, float]:
    out = {"requests": len(samples["latency"]), "errors": len(samples.pop("errors"))}
    for kind, values in samples.items():
        out[f"{kind}_p50_ms"] = statistics.median(values) * 1000
        out[f"{kind}_p99_ms"] = _percentile(values, 0.99) * 1000
    return out


def _start_gateway(backend: str, port: int, workdir: Path) -> subprocess.Popen:
    config = {
        "experiment": "bench",
        "control": {"url": backend, "model": "stub-model"},
        "treatment": {"url": backend, "model": "stub-model"},
        "stages": [{"name": "canary", "fraction": 0.5}],
        "store": f"sqlite:///{workdir / 'bench.db'}",
        "check_interval_s": 5,
    }
    path = workdir / "rollout.yaml"
    path.write_text(yaml.safe_dump(config))
    cmd = [sys.executable, "-m", "quantship.cli", "rollout", "serve", "--config", str(path), "--port", str(port)]
    process = subprocess.Popen(cmd, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.1)
        if time.monotonic() > deadline or process.poll() is not None:
            raise RuntimeError("gateway did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--requests-per-stream", type=int, default=20)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--token-delay-s", type=float, default=0.002)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "gateway.json")
    args = parser.parse_args()

    results = []
    with tempfile.TemporaryDirectory() as tmp, StubProcess(tokens=args.tokens, token_delay_s=args.token_delay_s) as backend:
        port = free_port()
        gateway = _start_gateway(backend.url, port, Path(tmp))
        gateway_cpu = psutil.Process(gateway.pid)
        try:
            targets = {"direct": f"{backend.base_url}/chat/completions", "gateway": f"http://127.0.0.1:{port}/v1/chat/completions"}
            for url in targets.values():  # warm both paths: backend, gateway and its upstream pool
                asyncio.run(_measure(url, 4, 5, args.tokens))
            per_turn = max(1, args.requests_per_stream // 2)
            for concurrency in args.concurrency:
                row = {"concurrency": concurrency}
                samples = {name: {"latency": [], "ttft": [], "errors": []} for name in targets}
                spent = 0.0
                for name in ABBA:  # interleaved, so drift on a shared machine hits both paths alike
                    cpu_before = gateway_cpu.cpu_times()
                    turn = asyncio.run(_measure(targets[name], concurrency, per_turn, args.tokens))
                    cpu_after = gateway_cpu.cpu_times()
                    for kind, values in turn.items():
                        samples[name][kind] += values
                    if name == "gateway":
                        spent += cpu_after.user + cpu_after.system - cpu_before.user - cpu_before.system
                for name in targets:
                    row[name] = _summary(samples[name])
                row["gateway_cpu_ms_per_request"] = 1000 * spent / max(row["gateway"]["requests"], 1)
                for stat in ("latency_p50_ms", "latency_p99_ms", "ttft_p50_ms", "ttft_p99_ms"):
                    row[f"added_{stat}"] = row["gateway"][stat] - row["direct"][stat]
                results.append(row)
                print(f"{concurrency:>3} streams: latency p50 {row['direct']['latency_p50_ms']:7.2f} -> {row['gateway']['latency_p50_ms']:7.2f} ms"
                      f" (+{row['added_latency_p50_ms']:.2f}), p99 {row['direct']['latency_p99_ms']:7.2f} -> "
                      f"{row['gateway']['latency_p99_ms']:7.2f} ms (+{row['added_latency_p99_ms']:.2f}), "
                      f"gateway CPU {row['gateway_cpu_ms_per_request']:.2f} ms/request", flush=True)
        finally:
            gateway.send_signal(signal.SIGTERM)
            gateway.wait(timeout=15)
    report = {
        "benchmark": "rollout gateway added latency (streamed chat completions, same backend)",
        "settings": vars(args) | {"out": str(args.out), "turns": list(ABBA)},
        **provenance(),
        "results": results,
    }
    atomic_write_json(args.out, report)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
