"""CPU of one rollout check's window read at a steady request rate, full versus incremental.

A check reads the window (`window_seconds` of observations) every `check_interval_s`.
This fills a SQLite store with a full window at `--rate` requests/s, then times, in CPU
seconds: the first read (every row decoded), the next check after one interval's worth of
new rows (only those decoded), and monitor.check over the result. Writes
benchmarks/results/rollout_window.json.

    python benchmarks/rollout_window.py [--rate 1000] [--window-s 120] [--interval-s 10]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from quantship.bench.provenance import provenance  # noqa: E402
from quantship.rollout.config import Thresholds  # noqa: E402
from quantship.rollout.monitor import check  # noqa: E402
from quantship.rollout.quality import Observation  # noqa: E402
from quantship.rollout.store import SqliteStore  # noqa: E402
from quantship.rundir import atomic_write_json  # noqa: E402

BATCH = 1000  # rows per write, as a flush at 1,000 requests/s writes them


def _observation(ts: float, i: int) -> Observation:
    return Observation(variant=("control", "treatment")[i % 2], ts=ts, ok=True, tokens=16, coherence=1.0,
                       ttft_s=0.002, latency_s=0.03)


async def _fill(store: SqliteStore, start: float, rate: float, count: int, first: int) -> None:
    for offset in range(0, count, BATCH):
        n = min(BATCH, count - offset)
        await store.write({}, [_observation(start + (first + offset + i) / rate, first + offset + i) for i in range(n)])


async def measure(rate: float, window_s: float, interval_s: float) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteStore(Path(tmp) / "rollout.db", "bench")
        start = 1_000_000.0
        full = int(rate * window_s)
        await _fill(store, start, rate, full, 0)
        now = start + window_s
        began = time.process_time()
        first = await store.window(now - window_s)
        first_s = time.process_time() - began
        step = int(rate * interval_s)
        await _fill(store, start, rate, step, full)
        now += interval_s
        began = time.process_time()
        await store.prune(now - window_s)
        window = await store.window(now - window_s)
        next_s = time.process_time() - began
        began = time.process_time()
        check(window, Thresholds(), 30, False, None, None)
        check_s = time.process_time() - began
        await store.close()
    return {"window_rows": len(window), "new_rows": step, "first_read_cpu_s": first_s, "next_read_cpu_s": next_s,
            "monitor_check_cpu_s": check_s, "rows_first_read": len(first),
            "check_cpu_share_of_a_core": (next_s + check_s) / interval_s,
            "check_cpu_ms_per_request": 1000 * (next_s + check_s) / step}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="requests/s the window was filled at")
    parser.add_argument("--window-s", type=float, default=120.0, help="the config's window_seconds (default 120)")
    parser.add_argument("--interval-s", type=float, default=10.0, help="the config's check_interval_s (default 10)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "rollout_window.json")
    args = parser.parse_args()
    result = asyncio.run(measure(args.rate, args.window_s, args.interval_s))
    atomic_write_json(args.out, {"benchmark": __doc__.splitlines()[0], "settings": vars(args) | {"out": str(args.out)},
                                 **provenance(), **result})
    print(f"window of {result['window_rows']} rows: first read {result['first_read_cpu_s']:.3f} s CPU, next check "
          f"{result['next_read_cpu_s']:.3f} s read + {result['monitor_check_cpu_s']:.3f} s check "
          f"({result['check_cpu_ms_per_request']:.3f} ms per request)")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
