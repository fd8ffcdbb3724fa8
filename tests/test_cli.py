"""The command line: every stage listed, one-line errors, exit codes, nothing written on error."""

from __future__ import annotations

from tests.support.cli import quantship


def test_help_lists_every_stage_and_version():
    result = quantship("--help")
    assert result.returncode == 0
    for verb in ("demo-model", "plan", "baseline", "calibrate", "quantize", "validate", "serve", "bench", "rollout", "run", "setup"):
        assert f" {verb} " in result.stdout, verb
    version = quantship("--version")
    assert version.returncode == 0 and version.stdout.startswith("quantship ")


def test_bad_model_path_is_one_line_exit_2_and_writes_nothing(tmp_path):
    result = quantship("baseline", "--model", str(tmp_path / "missing"), "--run-dir", str(tmp_path / "run"))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert "does not exist" in result.stderr and "demo-model" in result.stderr
    assert not (tmp_path / "run").exists()


def test_truncated_shard_through_the_cli(tiny_checkpoint, tmp_path):
    shard = tiny_checkpoint / "model.safetensors"
    shard.write_bytes(shard.read_bytes()[:-10])
    result = quantship("baseline", "--model", str(tiny_checkpoint), "--run-dir", str(tmp_path / "run"))
    assert result.returncode == 2
    assert "model.safetensors is truncated" in result.stderr and result.stderr.strip().count("\n") == 0
    assert not (tmp_path / "run").exists()


def test_calibrate_without_baseline_names_the_fix(tmp_path):
    result = quantship("calibrate", "--run-dir", str(tmp_path / "run"))
    assert result.returncode == 2
    assert "run `quantship baseline --model PATH" in result.stderr
