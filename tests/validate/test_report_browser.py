"""report.html opened from disk in real headless Chromium: it loads, tables and images are there."""

from __future__ import annotations

import re
import shutil
import subprocess

from quantship.rundir import RunDir, atomic_write_json
from quantship.validate.report import write_report
from tests.support.requires import chromium, requires


def _verdict(variant: str, bits: float, delta: float, passed: bool) -> dict:
    check = {"value": delta, "threshold": 0.1, "comparison": "<=", "unit": "", "detail": {}, "error": None, "passed": passed}
    greedy = {
        "value": 0.0 if passed else 0.5, "threshold": 0.1, "comparison": "<=", "unit": "", "error": None, "passed": passed,
        "detail": {"rows": [{"id": "story", "exact": False, "divergence": 3, "regression": not passed,
                             "baseline_text": "there lived <a fisher>", "variant_text": "there was a cat"}]},
    }
    return {
        "variant": variant, "passed": passed, "failed_checks": [] if passed else ["perplexity", "greedy"], "format": "gguf",
        "runtime": "llama.cpp", "bits_per_weight": bits, "thresholds": {"max_perplexity_delta": 0.1},
        "checks": {"perplexity": check, "greedy": greedy},
        "kl_histogram": {"edges": [0.0, 0.01, 0.1, None], "counts": [90, 8, 2] if passed else [10, 30, 60]},
    }


def _gguf_recovery() -> dict:
    """A --recover record of a GGUF variant as recover.py writes it: a screened failing step, then a pass."""
    layers = [{"layer": f"model.layers.{i}", "pattern": rf"model\.layers\.{i}\.", "score": s, "modules": 7, "weight_relative_error": 0.09}
              for i, s in [(29, 0.048), (11, 0.043), (2, 0.012)]]
    steps = [
        {"variant": "q4_0-mp2", "kept_blocks": ["model.layers.29", "model.layers.11"], "quantize_status": "done", "bits_per_weight": 5.55,
         "error": None, "passed": False, "screened": True, "failed_checks": ["perplexity"], "perplexity_delta": 0.152},
        {"variant": "q4_0-mp4", "kept_blocks": ["model.layers.29", "model.layers.11", "model.layers.2", "model.layers.1"],
         "quantize_status": "done", "bits_per_weight": 5.75, "error": None, "passed": True, "failed_checks": [], "perplexity_delta": 0.081},
    ]
    return {"variant": "q4_0", "format": "gguf", "scheme": "Q4_0", "bits_per_weight": 5.35, "budget_bits_per_weight": 8.0,
            "sensitivity": {"layers": layers, "tokens": 256, "method": "KL when only this block is quantized"},
            "precision": "8bit", "kept_type": "Q8_0", "steps": steps, "recovered": "q4_0-mp4",
            "outcome": "q4_0-mp4 passes at 5.750 bits/weight"}


@requires("chromium")
def test_report_renders_in_headless_chromium(tmp_path):
    run = RunDir(tmp_path / "run")
    atomic_write_json(run.root / "validation" / "q8.json", _verdict("q8", 8.5, 0.01, True))
    atomic_write_json(run.root / "validation" / "q2.json", _verdict("q2", 2.9, 0.9, False))
    atomic_write_json(run.root / "validation" / "q4_0.recovery.json", _gguf_recovery())
    report = write_report(run)
    shot = tmp_path / "shot.png"
    profile = tmp_path / "profile"
    common = [str(chromium()), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}"]
    dom = subprocess.run([*common, "--dump-dom", report.as_uri()], capture_output=True, text=True, timeout=180, check=True).stdout
    assert "<table id=\"checks\">" in dom and "<table id=\"divergences\">" in dom
    assert "&lt;a fisher&gt;" in dom  # generations are escaped, not injected
    images = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,([A-Za-z0-9+/=]{200,})"', dom)
    assert {alt for alt, _ in images} == {"bits per weight vs perplexity change", "per-position KL histogram", "sensitivity of q4_0"}
    assert "--recover q4_0</b> (gguf Q4_0, 5.35 bits/weight; budget 8 bits/weight, blocks kept at Q8_0): q4_0-mp4 passes" in dom
    recovery = re.findall(
        r"<tr><td>(q4_0-mp\d)</td><td>([^<]*)</td><td>([^<]*)</td><td>([^<]*)</td><td class=\"(\w+)\">([^<]*)</td></tr>", dom
    )
    assert recovery == [
        ("q4_0-mp2", "2: 29, 11", "5.55", "+15.2%", "fail", "FAIL perplexity (window screen)"),
        ("q4_0-mp4", "4: 29, 11, 2, 1", "5.75", "+8.1%", "pass", "PASS"),
    ]
    assert dom.count('class="fail">FAIL') == 2 and dom.count('class="pass">PASS') == 2
    shutil.rmtree(profile, ignore_errors=True)
    subprocess.run([*common, f"--screenshot={shot}", "--window-size=1200,2400", report.as_uri()],
                   capture_output=True, timeout=180, check=True)
    assert shot.stat().st_size > 10_000
