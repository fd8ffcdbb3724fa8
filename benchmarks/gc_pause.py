"""How long one full garbage collection stalls a bench client, with and without the frozen heap.

`quantship bench` runs in processes that hold a large heap: the pipeline's (torch,
transformers, llm-compressor imported) and pytest's (every test module collected). A full
collection walks every tracked object; if it lands while a request is in flight, the
client times the pause as that request's latency. This loads the same heap as the
README's test command does at its start (pytest's collection of `tests/`, in process),
then times full collections as they are and after `gc.freeze()`, the state
`bench.driver.caller_heap_frozen` keeps during a run. Writes benchmarks/results/gc_pause.json.

    python benchmarks/gc_pause.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from quantship.bench.driver import caller_heap_frozen  # noqa: E402
from quantship.bench.provenance import provenance  # noqa: E402
from quantship.rundir import atomic_write_json  # noqa: E402


def _full_collections_ms(repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        gc.collect()
        times.append(1000 * (time.perf_counter() - began))
    return times


class _Collected:
    """pytest plugin: stop once the suite is collected, holding what collection imported."""

    def pytest_collection_finish(self, session) -> None:
        self.tests = len(session.items)


def measure(repeats: int) -> dict:
    collected = _Collected()
    code = pytest.main(["--collect-only", "-qq", "-p", "no:cacheprovider", str(ROOT / "tests")], plugins=[collected])
    if code != 0:
        raise SystemExit(f"collecting tests/ failed (pytest exit {code}); run the README's setup first")
    tracked = len(gc.get_objects())
    as_is = _full_collections_ms(repeats)
    with caller_heap_frozen():
        frozen = _full_collections_ms(repeats)
    return {"tests_collected": collected.tests, "tracked_objects": tracked,
            "full_collection_ms": as_is, "full_collection_p50_ms": statistics.median(as_is),
            "frozen_collection_ms": frozen, "frozen_collection_p50_ms": statistics.median(frozen)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="full collections timed in each state")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "gc_pause.json")
    args = parser.parse_args()
    result = measure(args.repeats)
    atomic_write_json(args.out, {"benchmark": __doc__.splitlines()[0], "settings": vars(args) | {"out": str(args.out)},
                                 **provenance(), **result})
    print(f"{result['tracked_objects']} tracked objects after collecting {result['tests_collected']} tests: "
          f"full collection {result['full_collection_p50_ms']:.0f} ms p50, "
          f"{result['frozen_collection_p50_ms']:.2f} ms with the heap frozen")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
