"""Verdicts and the selection are trusted only while they describe the files on disk."""

from __future__ import annotations

import json

import pytest

from quantship.errors import InputError
from quantship.rundir import RunDir
from quantship.validate.select import select_variant
from quantship.validate.verdicts import load_selection, load_verdict
from tests.support.cli import in_process
from tests.support.serve_files import W8A8_INT8, make_variant


def _select(run_dir, variant: str) -> None:
    runs = RunDir(run_dir)
    record = {**json.loads((run_dir / "validation" / f"{variant}.json").read_text()), "variant": variant, "bits_per_weight": 4.5}
    select_variant(runs, [record], "smallest-passing")


def test_requantized_variant_makes_its_verdict_and_the_selection_stale(tmp_path):
    run_dir = tmp_path / "run"
    make_variant(run_dir, "w4")  # validated, passed
    _select(run_dir, "w4")
    assert load_selection(RunDir(run_dir)) == "w4"
    make_variant(run_dir, "w4", quant=W8A8_INT8, verdict=None, method="rtn")  # quantized again under that name
    verdict = load_verdict(RunDir(run_dir), "w4")
    assert verdict.record["passed"] is True and not verdict.passed and "quantized again since" in verdict.stale
    with pytest.raises(InputError, match="w4 at fingerprint .* but that variant is now .*: the selection is stale"):
        load_selection(RunDir(run_dir))


def test_serve_refuses_the_stale_selection_before_building_a_command(tmp_path, monkeypatch, capsys):
    run_dir = tmp_path / "run"
    make_variant(run_dir, "w4")
    _select(run_dir, "w4")
    code, out, _ = in_process(monkeypatch, capsys, "serve", "--run-dir", str(run_dir), "--variant", "selected", "--dry-run")
    assert code == 0 and "vllm" in out
    make_variant(run_dir, "w4", quant=W8A8_INT8, verdict=None, method="rtn")
    code, out, err = in_process(monkeypatch, capsys, "serve", "--run-dir", str(run_dir), "--variant", "selected", "--dry-run")
    assert code == 2 and out == "" and "selection is stale" in err and "quantship validate" in err


def test_a_baseline_measured_again_makes_the_verdict_stale(tmp_path):
    run_dir = tmp_path / "run"
    runs = RunDir(run_dir)
    with runs.stage("baseline", {"window": 512}, {}):
        pass
    make_variant(run_dir, "w4")
    path = run_dir / "validation" / "w4.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "baseline_fingerprint": runs.manifest("baseline")["fingerprint"]}))
    assert load_verdict(runs, "w4").passed
    with runs.stage("baseline", {"window": 1024}, {}):
        pass
    assert "measured again since" in load_verdict(runs, "w4").stale


def test_missing_and_broken_verdicts(tmp_path):
    run_dir = tmp_path / "run"
    make_variant(run_dir, "w4", verdict=None)
    assert load_verdict(RunDir(run_dir), "w4") is None
    (run_dir / "validation").mkdir()
    (run_dir / "validation" / "w4.json").write_text("{broken")
    with pytest.raises(InputError, match="not a valid verdict"):
        load_verdict(RunDir(run_dir), "w4")
    with pytest.raises(InputError, match="selected.json does not exist"):
        load_selection(RunDir(run_dir))
