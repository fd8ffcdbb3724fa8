"""Added latency of the rollout gateway over direct calls to the same backend.

Starts one OpenAI stub backend (its own process, able to score as a vLLM control does)
and two `quantship rollout serve` gateways (their own processes) whose control and
treatment both point at that backend: `gateway` with the live KL off, `gateway-judged`
judging a share of treatment answers (`--judge-rate`, default the config's 5%; 1 judges
every one, half the traffic at the 50% stage): each asks for log-probabilities, has them
stripped from the client's bytes and queues a score the backend answers as a vLLM control. Sends the
same streaming chat requests directly and through each at 1, 16 and 64 concurrent streams,
in one run: every path warmed first, then in mirrored turns (direct, gateway, judged,
judged, gateway, direct) so that drift cancels. Prints a table and writes JSON (default
benchmarks/results/gateway.json), with each gateway's CPU time per request, which is
steadier than wall time on a busy machine. No assertions: figures only.

    python benchmarks/gateway.py [--requests-per-stream 20] [--tokens 16] [--token-delay-s 0.002] [--judge-rate 0.05]
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
from quantship.rollout.config import LiveKL  # noqa: E402
from quantship.rundir import atomic_write_json  # noqa: E402
from tests.rollout.helpers import start_gateway_process  # noqa: E402
from tests.support.openai_stub import StubProcess, free_port  # noqa: E402


# Each turn sends half of --requests-per-stream per stream.
PATHS = ("direct", "gateway", "gateway-judged")
TURNS = (*PATHS, *reversed(PATHS))


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


def _start_gateway(backend: str, port: int, workdir: Path, judge_rate: float) -> subprocess.Popen:
    config = {
        "experiment": "bench",
        "control": {"url": backend, "model": "stub-model"},
        "treatment": {"url": backend, "model": "stub-model"},
        "stages": [{"name": "canary", "fraction": 0.5}],
        "store": f"sqlite:///{workdir / 'bench.db'}",
        "check_interval_s": 5,
        "live_kl": {"sample_rate": judge_rate},
    }
    workdir.mkdir()
    path = workdir / "rollout.yaml"
    path.write_text(yaml.safe_dump(config))
    return start_gateway_process(path, port, workdir / "gateway.log")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--requests-per-stream", type=int, default=20)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--token-delay-s", type=float, default=0.002)
    parser.add_argument("--judge-rate", type=float, default=LiveKL().sample_rate, help="live_kl.sample_rate of gateway-judged")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "gateway.json")
    args = parser.parse_args()

    results = []
    stub = StubProcess(tokens=args.tokens, token_delay_s=args.token_delay_s, scorer=True)
    with tempfile.TemporaryDirectory() as tmp, stub as backend:
        ports = {"gateway": free_port(), "gateway-judged": free_port()}
        gateways = {name: _start_gateway(backend.url, port, Path(tmp) / name, args.judge_rate if name == "gateway-judged" else 0.0)
                    for name, port in ports.items()}
        cpu = {name: psutil.Process(g.pid) for name, g in gateways.items()}
        try:
            targets = {"direct": f"{backend.base_url}/chat/completions",
                       **{name: f"http://127.0.0.1:{port}/v1/chat/completions" for name, port in ports.items()}}
            for url in targets.values():  # warm every path: backend, gateways and their upstream pools
                asyncio.run(_measure(url, 4, 5, args.tokens))
            per_turn = max(1, args.requests_per_stream // 2)
            for concurrency in args.concurrency:
                row = {"concurrency": concurrency}
                samples = {name: {"latency": [], "ttft": [], "errors": []} for name in targets}
                spent = dict.fromkeys(gateways, 0.0)
                for name in TURNS:  # interleaved, so drift on a shared machine hits every path alike
                    before = {g: p.cpu_times() for g, p in cpu.items()}
                    turn = asyncio.run(_measure(targets[name], concurrency, per_turn, args.tokens))
                    for kind, values in turn.items():
                        samples[name][kind] += values
                    for g, process in cpu.items():  # every turn: scores queued in one turn may run in the next
                        after = process.cpu_times()
                        spent[g] += after.user + after.system - before[g].user - before[g].system
                for name in targets:
                    row[name] = _summary(samples[name])
                for name in gateways:
                    row[f"{name}_cpu_ms_per_request"] = 1000 * spent[name] / max(row[name]["requests"], 1)
                    for stat in ("latency_p50_ms", "latency_p99_ms", "ttft_p50_ms", "ttft_p99_ms"):
                        row[f"{name}_added_{stat}"] = row[name][stat] - row["direct"][stat]
                results.append(row)
                print(f"{concurrency:>3} streams: latency p50 direct {row['direct']['latency_p50_ms']:7.2f} ms, "
                      + ", ".join(f"{name} +{row[f'{name}_added_latency_p50_ms']:.2f} (p99 +{row[f'{name}_added_latency_p99_ms']:.2f},"
                                  f" CPU {row[f'{name}_cpu_ms_per_request']:.2f} ms/request)" for name in gateways), flush=True)
        finally:
            for gateway in gateways.values():
                gateway.send_signal(signal.SIGTERM)
                gateway.wait(timeout=15)
    report = {
        "benchmark": "rollout gateway added latency (streamed chat completions, same backend)",
        "settings": vars(args) | {"out": str(args.out), "turns": list(TURNS)},
        **provenance(),
        "results": results,
    }
    atomic_write_json(args.out, report)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
