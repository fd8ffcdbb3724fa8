"""Where the rollout gateway's CPU goes: a cProfile of `rollout serve` under streamed load, by component.

Starts the stub backend, then the gateway under cProfile in its own process (the same
app and uvicorn settings `quantship rollout serve` uses; `--src` profiles another
checkout's code, e.g. the gateway before a change), sends `--requests` streamed chat
completions at `--concurrency` streams, and sums the profile's own time (tottime) by
component: the event loop and sockets, the HTTP server, the web framework, the backend
client, quantship's parts. The profile's clock is the process's CPU time, so the loop's
idle waits for the next byte count for nothing (a wall clock made them most of the "event
loop" share). cProfile slows Python code more than C code, so read the shares, not the
absolute times. Writes JSON (default benchmarks/results/gateway-profile.json,
one entry per `--label`, kept across runs).

    python benchmarks/gateway_profile.py --label after [--src PATH/TO/src] [--requests 640] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pstats
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.gateway import STUB_MODEL, measure  # noqa: E402
from quantship.bench.provenance import provenance  # noqa: E402
from quantship.rundir import atomic_write_json  # noqa: E402
from tests.support.openai_stub import StubProcess, free_port  # noqa: E402

# First match wins: (component, path fragments of the profiled function's file).
COMPONENTS = (
    ("event loop and sockets (asyncio / uvloop, C)", ("/asyncio/", "/selectors.py", "/uvloop/", "/socket.py", "/ssl.py")),
    ("HTTP server (uvicorn, h11 / httptools)", ("/uvicorn/", "/h11/", "/httptools/")),
    ("web framework (Starlette, anyio)", ("/starlette/", "/anyio/", "/sniffio/")),
    ("backend client (httpx + httpcore / aiohttp)", ("/httpx/", "/httpcore/", "/aiohttp/", "/yarl/", "/multidict/",
                                                     "/aiohappyeyeballs/", "/propcache/", "/http/cookiejar.py")),
    ("stream parsing (rollout/sse.py)", ("/rollout/sse.py", "/rollout/logprobs.py")),
    ("store writes (SQLite)", ("/rollout/store.py", "/rollout/buffered.py", "/sqlite3/", "/dataclasses.py")),
    ("request checks (rollout/validate.py)", ("/rollout/validate.py",)),
    ("quality observation (rollout/quality.py)", ("/rollout/quality.py", "/re/", "/unicodedata")),
    ("Prometheus metrics", ("/prometheus_client/",)),
    ("gateway logic (routing, breaker, judge, checks)", ("/rollout/",)),
)
_SERVE = """
import cProfile, signal, sys, time, uvicorn
from quantship.rollout.config import load_config
from quantship.rollout import gateway
cfg = load_config(sys.argv[1])
options = getattr(gateway, "SERVER", {"loop": "asyncio", "http": "h11"})  # as `rollout serve` ran at that revision
server = uvicorn.Server(uvicorn.Config(gateway.build_app(cfg), host="127.0.0.1", port=int(sys.argv[2]),
                                       log_level="warning", **options))
profile = cProfile.Profile(time.process_time)  # CPU time: the loop's idle waits are not its cost
def stop(*_):
    profile.disable(); profile.dump_stats(sys.argv[3]); sys.exit(0)
signal.signal(signal.SIGTERM, stop)
profile.enable()
server.run()
"""


def _component(filename: str) -> str:
    for name, fragments in COMPONENTS:
        if any(fragment in filename for fragment in fragments):
            return name
    return "other"


def _breakdown(stats_path: Path) -> dict[str, float]:
    """Own time by component. A built-in (a socket call, sqlite3, the JSON scanner) or a stdlib helper
    (contextlib, typing, importlib) counts for the component that called it, the nearest one up the stack."""
    stats = pstats.Stats(str(stats_path)).stats
    memo: dict[tuple, dict[str, float]] = {}

    def owners(func: tuple, depth: int = 0) -> dict[str, float]:
        """How a unit of this function's own time splits over components."""
        if func in memo:
            return memo[func]
        name = _component(func[0]) if func[0] != "~" else "other"
        callers = stats[func][4] if func in stats else {}
        if name != "other" or depth > 8 or not callers:
            split = {COMPONENTS[0][0] if name == "other" else name: 1.0}  # no caller: the event loop's own C code
        else:  # callers[caller][2]: this function's own time under that caller
            total = sum(c[2] for c in callers.values()) or 1.0
            split = {}
            for caller, c in callers.items():
                for owner, part in owners(caller, depth + 1).items():
                    split[owner] = split.get(owner, 0.0) + part * c[2] / total
        memo[func] = split
        return split

    seconds: dict[str, float] = {}
    for func, (_, _, tottime, _, _) in stats.items():
        for name, part in owners(func).items():
            seconds[name] = seconds.get(name, 0.0) + tottime * part
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", required=True, help="name of this profile in the JSON (e.g. before, after)")
    parser.add_argument("--src", type=Path, default=ROOT / "src", help="the quantship source tree to profile")
    parser.add_argument("--requests", type=int, default=640)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "gateway-profile.json")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp, StubProcess(tokens=args.tokens, token_delay_s=0.002, scorer=True) as backend:
        config = {"experiment": "bench", "control": {"url": backend.url, "model": STUB_MODEL},
                  "treatment": {"url": backend.url, "model": STUB_MODEL}, "stages": [{"name": "canary", "fraction": 0.5}],
                  "store": f"sqlite:///{tmp}/bench.db",
                  "probes": [{"prompt": "What is the capital of France?", "expect": ["Paris"]}]}
        config_path, stats_path = Path(tmp, "rollout.yaml"), Path(tmp, "gateway.pstats")
        config_path.write_text(yaml.safe_dump(config))
        port = free_port()
        env = {**os.environ, "PYTHONPATH": str(args.src.resolve())}
        gateway = subprocess.Popen([sys.executable, "-c", _SERVE, str(config_path), str(port), str(stats_path)], env=env)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if gateway.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the profiled gateway did not come up")
                time.sleep(0.2)
            url = f"http://127.0.0.1:{port}/v1/chat/completions"
            asyncio.run(measure(url, 4, 5, args.tokens))  # warm
            served = asyncio.run(measure(url, args.concurrency, args.requests // args.concurrency, args.tokens))
        finally:
            gateway.send_signal(signal.SIGTERM)
            gateway.wait(timeout=30)
        seconds = _breakdown(stats_path)
    total = sum(seconds.values())
    requests = len(served["latency"]) + 20
    entry = {
        "label": args.label, "src": str(args.src), "requests": requests, "concurrency": args.concurrency,
        "profiled_cpu_ms_per_request": 1000 * total / requests,
        "share": {name: seconds[name] / total for name in sorted(seconds, key=seconds.get, reverse=True)},
        **provenance(),
    }
    previous = json.loads(args.out.read_text()) if args.out.exists() else {"profiles": []}
    profiles = [p for p in previous["profiles"] if p["label"] != args.label] + [entry]
    atomic_write_json(args.out, {"benchmark": "rollout gateway CPU by component (cProfile tottime)", "profiles": profiles})
    print(f"{args.label}: {entry['profiled_cpu_ms_per_request']:.2f} profiled CPU ms/request")
    for name, share in entry["share"].items():
        print(f"  {100 * share:5.1f}%  {name}")


if __name__ == "__main__":
    main()
