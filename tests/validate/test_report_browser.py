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
    kl = {**check, "value": delta / 4, "threshold": 0.05}
    greedy = {
        "value": 0.0 if passed else 0.5, "threshold": 0.1, "comparison": "<=", "unit": "", "error": None, "passed": passed,
        "detail": {"rows": [{"id": "story", "exact": False, "divergence": 3, "regression": not passed,
                             "baseline_text": "there lived <a fisher>", "variant_text": "there was a cat"}]},
    }
    return {
        "variant": variant, "passed": passed, "failed_checks": [] if passed else ["perplexity", "greedy"], "format": "gguf",
        "runtime": "llama.cpp", "bits_per_weight": bits, "thresholds": {"max_perplexity_delta": 0.1},
        "checks": {"perplexity": check, "kl_mean": kl, "greedy": greedy},
        "kl_histogram": {"edges": [0.0, 0.01, 0.1, None], "counts": [90, 8, 2] if passed else [10, 30, 60]},
    }


def _allocation() -> dict:
    """An allocation record as validate/mixed_precision.py writes it: a failing build, then a pass."""
    kinds = ["self_attn.q_proj", "self_attn.k_proj", "mlp.down_proj"]
    types = {f"model.layers.{b}.{k}.weight": t for b in range(3) for k, t in zip(kinds, ["Q4_0", "Q5_0", "Q8_0"], strict=True)}
    types["model.embed_tokens.weight"] = "Q5_1"
    runs = [
        {"variant": "q4_0-mix1", "target_kl": 0.025, "predicted_kl": 0.024, "predicted_bits_per_weight": 5.1, "bits_per_weight": 5.1,
         "passed": False, "failed_checks": ["top1_agreement"], "gate_ratio": 1.4, "kl_mean": 0.041, "perplexity_delta": 0.061,
         "top1_agreement": 0.88, "types": types},
        {"variant": "q4_0-mix2", "target_kl": 0.0154, "predicted_kl": 0.0151, "predicted_bits_per_weight": 5.4, "bits_per_weight": 5.4,
         "passed": True, "failed_checks": [], "gate_ratio": 0.93, "kl_mean": 0.026, "perplexity_delta": 0.032,
         "top1_agreement": 0.905, "types": {**types, "model.layers.0.self_attn.q_proj.weight": "Q6_K"}},
    ]
    return {"variant": "q4_0", "format": "gguf Q4_0", "backend": "gguf", "mode": "gate", "max_bits_per_weight": 8.0,
            "sensitivity": {"file": "validation/allocation/sensitivity-x.json", "tokens": 512}, "runs": runs,
            "recovered": "q4_0-mix2", "gap": None, "gate_runs": 2,
            "outcome": "q4_0-mix2 passes at 5.400 bits/weight after 2 gate run(s)"}


@requires("chromium")
def test_report_renders_in_headless_chromium(tmp_path):
    run = RunDir(tmp_path / "run")
    atomic_write_json(run.root / "validation" / "q8.json", _verdict("q8", 8.5, 0.01, True))
    atomic_write_json(run.root / "validation" / "q2.json", _verdict("q2", 2.9, 0.9, False))
    atomic_write_json(run.root / "validation" / "q4_0.allocation.json", _allocation())
    report = write_report(run)
    shot = tmp_path / "shot.png"
    profile = tmp_path / "profile"
    common = [str(chromium()), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}"]
    dom = subprocess.run([*common, "--dump-dom", report.as_uri()], capture_output=True, text=True, timeout=180, check=True).stdout
    assert "<table id=\"checks\">" in dom and "<table id=\"divergences\">" in dom
    assert "&lt;a fisher&gt;" in dom  # generations are escaped, not injected
    images = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,([A-Za-z0-9+/=]{200,})"', dom)
    assert {alt for alt, _ in images} == {"bits per weight vs perplexity change", "bits per weight vs KL mean",
                                          "per-position KL histogram", "tensor map of q4_0-mix2"}
    assert "allocation for q4_0</b> (gguf Q4_0; target gate, at most 8 bits/weight; sensitivity on 512 calibration tokens)" in dom
    runs = re.findall(r"<tr><td>(q4_0-mix\d)</td>((?:<td>[^<]*</td>){8})<td class=\"(\w+)\">([^<]*)</td></tr>", dom)
    assert [(name, cls, verdict) for name, _, cls, verdict in runs] == [
        ("q4_0-mix1", "fail", "FAIL top1_agreement"), ("q4_0-mix2", "pass", "PASS")]
    assert "<td>5.4</td><td>0.026</td><td>+3.2%</td><td>0.905</td>" in runs[1][1]
    assert dom.count('class="fail">FAIL') == 2 and dom.count('class="pass">PASS') == 2
    shutil.rmtree(profile, ignore_errors=True)
    subprocess.run([*common, f"--screenshot={shot}", "--window-size=1200,2400", report.as_uri()],
                   capture_output=True, timeout=180, check=True)
    assert shot.stat().st_size > 10_000
