"""--recover on the tiny Llama: sensitivity ranks the blocks, requantizes with overrides, records every step."""

from __future__ import annotations

import pytest

from quantship.progress import stderr_console
from quantship.quantize.spec import VariantSpec
from quantship.quantize.variants import run_quantize
from quantship.rundir import read_json
from tests.support.recover_options import LOOSE, SMALL
from tests.support.validate_runs import run_cli


@pytest.fixture
def w4_run(validate_run, tmp_path):
    run_quantize(validate_run, [VariantSpec(name="w4", method="rtn", scheme="W4A16", group_size=32)], stderr_console())
    thresholds = tmp_path / "gate.yaml"
    thresholds.write_text(LOOSE)
    return validate_run, thresholds


def test_recover_keeps_the_most_sensitive_block_and_passes(w4_run, monkeypatch, capsys):
    run, thresholds = w4_run
    common = ["--run-dir", str(run.root), "--variant", "w4", "--thresholds", str(thresholds), *SMALL]
    assert run_cli(monkeypatch, capsys, *common)[0] == 0
    kl = read_json(run.root / "validation" / "w4.json")["checks"]["kl_mean"]["value"]
    assert kl > 0

    strict = f"{kl * 0.75:.8f}"
    code, out, err = run_cli(monkeypatch, capsys, *common, "--max-kl-mean", strict, "--recover", "--blocks-per-step", "1",
                             "--max-bits-per-weight", "32", "--select", "smallest-passing")
    record = read_json(run.root / "validation" / "w4.recovery.json")
    layers = record["sensitivity"]["layers"]
    assert [x["layer"] for x in sorted(layers, key=lambda x: x["layer"])] == ["model.layers.0", "model.layers.1"]
    assert layers[0]["score"] >= layers[1]["score"] > 0
    [step] = record["steps"]
    assert step["variant"] == "w4-mp1" and step["kept_blocks"] == [layers[0]["layer"]]
    manifest = read_json(run.root / "variants" / "w4-mp1" / "manifest.json")
    assert manifest["overrides"] == [{"pattern": layers[0]["pattern"], "precision": "8bit"}]
    assert manifest["bits_per_weight"] > read_json(run.root / "variants" / "w4" / "manifest.json")["bits_per_weight"]
    assert record["recovered"] == "w4-mp1" and step["passed"], (record, err)
    assert code == 0 and "recover w4: w4-mp1 passes" in out
    assert read_json(run.root / "validation" / "selected.json")["selected"] == "w4-mp1"
    page = (run.root / "report.html").read_text()
    assert 'alt="sensitivity of w4"' in page and "w4-mp1 passes" in page


def test_recover_stops_at_the_bits_budget_and_the_gate_still_fails(w4_run, monkeypatch, capsys):
    run, thresholds = w4_run
    budget = read_json(run.root / "variants" / "w4" / "manifest.json")["bits_per_weight"] + 1e-3
    code, out, err = run_cli(monkeypatch, capsys, "--run-dir", str(run.root), "--variant", "w4", "--thresholds", str(thresholds),
                             *SMALL, "--max-kl-mean", "0", "--recover", "--max-bits-per-weight", str(budget))
    record = read_json(run.root / "validation" / "w4.recovery.json")
    assert code == 1 and "w4 (kl_mean)" in err
    assert record["recovered"] is None and record["steps"][0]["over_budget"] and "over the budget" in record["outcome"]


def test_recover_of_a_variant_already_over_the_budget_requantizes_nothing(w4_run, monkeypatch, capsys):
    run, thresholds = w4_run
    budget = read_json(run.root / "variants" / "w4" / "manifest.json")["bits_per_weight"] - 1e-3
    code, out, err = run_cli(monkeypatch, capsys, "--run-dir", str(run.root), "--variant", "w4", "--thresholds", str(thresholds),
                             *SMALL, "--max-kl-mean", "0", "--recover", "--max-bits-per-weight", str(budget))
    record = read_json(run.root / "validation" / "w4.recovery.json")
    assert code == 1 and "w4 (kl_mean)" in err
    assert record["steps"] == [] and record["recovered"] is None and "not under the budget" in record["outcome"]
    assert not list((run.root / "variants").glob("w4-mp*"))
    assert "not under the budget" in (run.root / "report.html").read_text()
