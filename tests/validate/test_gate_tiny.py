"""The gate end to end on the tiny Llama: a real W8A16 variant passes, a broken one fails by name."""

from __future__ import annotations

import json

from quantship.rundir import read_json
from tests.support.validate_runs import run_cli

SMALL = ["--long-window", "128", "--long-windows", "1", "--tasks", "none"]


def test_good_passes_broken_fails_with_named_checks(validate_run, monkeypatch, capsys):
    root = validate_run.root
    code, out, err = run_cli(monkeypatch, capsys, "--run-dir", str(root), "--select", "smallest-passing", *SMALL)
    assert code == 1, (out, err)
    last = err.strip().splitlines()[-1]
    assert "gate failed: broken (" in last and "perplexity" in last and "kl_mean" in last and "w8" not in last.split(";")[0]

    good = read_json(root / "validation" / "w8.json")
    assert good["passed"] is True and good["runtime"] == "transformers" and good["format"] == "compressed-tensors"
    assert set(good["checks"]) == {"perplexity", "kl_mean", "kl_p99", "top1_agreement", "greedy", "probes", "long_context"}
    assert all(c["passed"] and c["value"] is not None for c in good["checks"].values())
    # the W8 weights really are quantized: small but non-zero distance from the baseline
    assert 0 < good["checks"]["kl_mean"]["value"] < 0.05
    assert good["checks"]["long_context"]["detail"]["window"] == 128
    assert good["checks"]["long_context"]["detail"]["scored_from_position"] == 32

    broken = read_json(root / "validation" / "broken.json")
    assert broken["passed"] is False
    assert {"perplexity", "kl_mean", "top1_agreement"} <= set(broken["failed_checks"])
    assert broken["checks"]["perplexity"]["value"] > 0.1

    selected = read_json(root / "validation" / "selected.json")
    assert selected["selected"] == "w8" and selected["variant_fingerprint"] == good["variant_fingerprint"]
    assert (root / "validation" / "baseline-long.json").exists()
    assert "w8: PASS" in out and "broken: FAIL" in out

    # the good variant alone exits 0; its unchanged verdict is reused
    code, out, err = run_cli(monkeypatch, capsys, "--run-dir", str(root), "--variant", "w8", *SMALL)
    assert code == 0, err
    assert "unchanged" in err


def test_unloadable_variant_fails_every_check_never_passes(validate_run, monkeypatch, capsys):
    root = validate_run.root
    weights = root / "variants" / "w8" / "model.safetensors"
    intact = weights.read_bytes()
    weights.write_bytes(b"not a safetensors file")
    code, _, err = run_cli(monkeypatch, capsys, "--run-dir", str(root), "--variant", "w8", *SMALL)
    assert code == 1 and "w8 (perplexity, kl_mean" in err
    verdict = json.loads((root / "validation" / "w8.json").read_text())
    assert verdict["passed"] is False and all(c["error"] for c in verdict["checks"].values())
    # An errored verdict is never kept as "unchanged": once the weights are whole again, it is measured anew.
    weights.write_bytes(intact)
    code, _, err = run_cli(monkeypatch, capsys, "--run-dir", str(root), "--variant", "w8", *SMALL)
    assert code == 0 and "unchanged" not in err, err
    assert json.loads((root / "validation" / "w8.json").read_text())["passed"] is True


def test_bad_input_is_one_line_exit_2(validate_run, monkeypatch, capsys, tmp_path):
    code, _, err = run_cli(monkeypatch, capsys, "--run-dir", str(validate_run.root), "--variant", "nosuch")
    assert code == 2 and "no complete variant 'nosuch'" in err
    code, _, err = run_cli(monkeypatch, capsys, "--run-dir", str(validate_run.root), "--select", "biggest")
    assert code == 2 and "unknown selection policy 'biggest'" in err and "smallest-passing" in err
    code, _, err = run_cli(monkeypatch, capsys, "--run-dir", str(tmp_path / "empty"))
    assert code == 2 and "quantship baseline" in err
