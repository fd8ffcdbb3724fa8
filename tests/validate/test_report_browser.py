"""report.html opened from disk in real headless Chromium: it loads, tables and images are there."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from quantship.rundir import RunDir, atomic_write_json
from quantship.validate.report import write_report

CHROMIUM = Path("/usr/bin/chromium")


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


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed (apt-get install -y chromium)")
def test_report_renders_in_headless_chromium(tmp_path):
    run = RunDir(tmp_path / "run")
    atomic_write_json(run.root / "validation" / "q8.json", _verdict("q8", 8.5, 0.01, True))
    atomic_write_json(run.root / "validation" / "q2.json", _verdict("q2", 2.9, 0.9, False))
    report = write_report(run)
    shot = tmp_path / "shot.png"
    profile = tmp_path / "profile"
    common = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}"]
    dom = subprocess.run([*common, "--dump-dom", report.as_uri()], capture_output=True, text=True, timeout=180, check=True).stdout
    assert "<table id=\"checks\">" in dom and "<table id=\"divergences\">" in dom
    assert "&lt;a fisher&gt;" in dom  # generations are escaped, not injected
    images = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,([A-Za-z0-9+/=]{200,})"', dom)
    assert {alt for alt, _ in images} == {"bits per weight vs perplexity change", "per-position KL histogram"}
    assert dom.count('class="fail">FAIL') == 1 and dom.count('class="pass">PASS') == 1
    shutil.rmtree(profile, ignore_errors=True)
    subprocess.run([*common, f"--screenshot={shot}", "--window-size=1200,2400", report.as_uri()],
                   capture_output=True, timeout=180, check=True)
    assert shot.stat().st_size > 10_000
