"""End to end on the real demo model: baseline then calibrate through the CLI."""

from __future__ import annotations

import re

import pytest

from quantship.rundir import RunDir, read_json
from tests.support.cli import quantship

pytestmark = pytest.mark.e2e


def test_demo_baseline_and_calibrate(demo_checkpoint, tmp_path):
    run_dir = tmp_path / "demo"
    result = quantship(
        "baseline", "--model", str(demo_checkpoint), "--run-dir", str(run_dir), "--max-windows", "8", "--max-new-tokens", "16"
    )
    assert result.returncode == 0, result.stderr
    line = re.search(r"baseline perplexity ([\d.]+) on ([\d,]+) tokens .*\(([\d,]+) tok/s\)", result.stdout)
    assert line, result.stdout
    baseline = read_json(run_dir / "baseline" / "baseline.json")
    assert float(line.group(1)) == pytest.approx(baseline["perplexity"]["value"], abs=1e-3)
    # a real instruct model on English prose: far from uniform over 49,152 tokens
    assert 5 < baseline["perplexity"]["value"] < 40
    assert baseline["probes"]["rate"] >= 0.8
    references = read_json(run_dir / "baseline" / "references.json")
    france = next(r for r in references["references"] if r["id"] == "france")
    assert france["text"].startswith(" Berlin")

    result = quantship("calibrate", "--run-dir", str(run_dir), "--samples", "16", "--seq-len", "256")
    assert result.returncode == 0, result.stderr
    manifest = RunDir(run_dir).manifest("calibration")
    assert manifest["stats"]["samples"] == 16 and manifest["stats"]["seq_len"] == 256
    assert "vocabulary coverage" in result.stdout

    rerun = quantship("calibrate", "--run-dir", str(run_dir), "--samples", "16", "--seq-len", "256")
    assert rerun.returncode == 0 and "unchanged" in rerun.stderr
    assert RunDir(run_dir).manifest("calibration")["started_at"] == manifest["started_at"]
