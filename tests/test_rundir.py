"""The run directory: atomic outputs, skip-if-unchanged, nothing half-written on interrupt."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from quantship.rundir import MANIFEST, RunDir, atomic_write_json, stage_fingerprint


def test_stage_publishes_outputs_with_manifest_last(tmp_path):
    run = RunDir(tmp_path / "run")
    with run.stage("calibration", {"samples": 4}, {"text": "abc"}) as stage:
        stage.path("tokens.txt").write_text("1 2 3")
        assert not run.stage_dir("calibration").exists(), "output visible before the stage finished"
    manifest = run.manifest("calibration")
    assert manifest["status"] == "complete"
    assert manifest["params"] == {"samples": 4}
    assert manifest["outputs"]["tokens.txt"]["bytes"] == 5
    assert manifest["fingerprint"] == stage_fingerprint("calibration", {"samples": 4}, {"text": "abc"})
    assert manifest["peak_rss_bytes"] > 0 and manifest["wall_time_s"] >= 0
    assert "torch" in manifest["tool_versions"]
    assert run.is_current("calibration", manifest["fingerprint"])
    assert not run.is_current("calibration", stage_fingerprint("calibration", {"samples": 5}, {"text": "abc"}))


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()])
def test_failed_stage_keeps_previous_output_and_leaves_no_staging(tmp_path, error):
    run = RunDir(tmp_path / "run")
    with run.stage("baseline", {"v": 1}, {}) as stage:
        stage.path("result.json").write_text("old")
    with pytest.raises(type(error)):
        with run.stage("baseline", {"v": 2}, {}) as stage:
            stage.path("result.json").write_text("half")
            raise error
    assert (run.stage_dir("baseline") / "result.json").read_text() == "old"
    assert run.manifest("baseline")["params"] == {"v": 1}
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["baseline"]


def test_nested_stage_names(tmp_path):
    run = RunDir(tmp_path / "run")
    with run.stage("variants/w4a16", {}, {}) as stage:
        stage.path("model.safetensors").write_bytes(b"x")
    assert (tmp_path / "run" / "variants" / "w4a16" / MANIFEST).is_file()


def test_kill_9_mid_stage_leaves_nothing_readable_and_next_run_cleans_up(tmp_path):
    root = tmp_path / "run"
    script = textwrap.dedent(
        f"""
        import time
        from quantship.rundir import RunDir
        with RunDir({str(root)!r}).stage("quantize", {{}}, {{}}) as stage:
            stage.path("weights.bin").write_bytes(b"0" * 1000)
            print("writing", flush=True)
            time.sleep(60)
        """
    )
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "writing"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    run = RunDir(root)
    assert run.manifest("quantize") is None
    assert not run.stage_dir("quantize").exists()
    assert any(p.name.startswith(".staging-quantize") for p in root.iterdir())
    with run.stage("quantize", {}, {}) as stage:
        stage.path("weights.bin").write_bytes(b"1")
    assert sorted(p.name for p in root.iterdir()) == ["quantize"]


def test_atomic_write_json_never_exposes_partial_file(tmp_path):
    target = tmp_path / "a.json"
    atomic_write_json(target, {"x": 1})
    with pytest.raises(TypeError):
        atomic_write_json(target, {"x": object()})
    assert json.loads(target.read_text()) == {"x": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_hash_cache_reuses_digest_until_file_changes(tmp_path):
    run = RunDir(tmp_path / "run")
    data = tmp_path / "weights.bin"
    data.write_bytes(b"a" * 100)
    first = run.hash_inputs({"w": data})
    cache = json.loads((tmp_path / "run" / ".quantship" / "hash-cache.json").read_text())
    assert list(cache.values())[0]["sha256"] == first["w"]
    time.sleep(0.01)
    data.write_bytes(b"b" * 100)
    assert run.hash_inputs({"w": data})["w"] != first["w"]
