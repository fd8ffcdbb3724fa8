"""`quantship bench` as a user runs it: one-line errors, a full side-by-side run."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from quantship.rundir import read_json
from tests.support.openai_stub import StubProcess


def quantship(*args, timeout=180):
    return subprocess.run(
        [sys.executable, "-m", "quantship.cli", "bench", *args], capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--url", "http://127.0.0.1:9", "--concurrency", "1,x"], "--concurrency '1,x' is not a comma-separated list"),
        (["--url", "http://127.0.0.1:9", "--concurrency", "2.5"], "must list positive whole numbers"),
        (
            ["--url", "http://127.0.0.1:9", "--concurrency", "1", "--rate", "2"],
            "--concurrency and --rate were both given",
        ),
        (["--url", "http://127.0.0.1:9", "--compare-model", "x"], "need a second endpoint"),
        (["--url", "http://127.0.0.1:9"], "cannot reach http://127.0.0.1:9/v1"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, message):
    result = quantship(*args)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]


def test_side_by_side_run_writes_summary_requests_and_plots(tmp_path):
    with (
        StubProcess(mode="slow", first_token_delay_s=0.02, token_delay_s=0.02, tokens=6, model="bf16") as a,
        StubProcess(mode="slow", first_token_delay_s=0.02, token_delay_s=0.005, tokens=6, model="w4a16") as b,
    ):
        result = quantship(
            "--url",
            a.url,
            "--compare-url",
            b.base_url,
            "--concurrency",
            "1,2",
            "--requests",
            "4",
            "--max-tokens",
            "6",
            "--warmup",
            "1",
            "--slo-e2e-ms",
            "60000",
            "--run-dir",
            str(tmp_path),
            "--tag",
            "bf16-vs-w4",
        )
        states = a.state(), b.state()
    assert result.returncode == 0, result.stderr
    assert [s["requests"] for s in states] == [1 + 2 * 4] * 2
    out = tmp_path / "bench" / "bf16-vs-w4"
    assert "w4a16 / bf16" in result.stdout and str(out) in result.stdout
    summary = read_json(out / "summary.json")
    assert [t["label"] for t in summary["targets"]] == ["bf16", "w4a16"]
    assert [(s["endpoint"], s["level"], s["ok"]) for s in summary["summaries"]] == [
        ("bf16", 1.0, 4),
        ("w4a16", 1.0, 4),
        ("bf16", 2.0, 4),
        ("w4a16", 2.0, 4),
    ]
    assert all(s["goodput"]["share"] == 1.0 for s in summary["summaries"])
    assert len(summary["comparisons"]) == 2
    lines = (out / "requests.jsonl").read_text().splitlines()
    assert len(lines) == 2 * (1 + 2 * 4)
    assert sum(json.loads(line)["phase"] == "warmup" for line in lines) == 2
    for plot in ("latency_cdf.png", "throughput.png"):
        assert (out / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    manifest = read_json(out / "manifest.json")
    assert manifest["status"] == "complete" and "summary.json" in manifest["outputs"]


def test_a_run_where_every_request_fails_still_writes_results_and_exits_2(tmp_path):
    with StubProcess(mode="error") as stub:
        result = quantship("--url", stub.url, "--requests", "3", "--warmup", "0", "--run-dir", str(tmp_path))
    assert result.returncode == 2
    assert "every request to stub-model at concurrency 1 failed (http_500 x3)" in result.stderr
    summary = read_json(tmp_path / "bench" / "main" / "summary.json")
    assert summary["summaries"][0]["errors"] == 3
