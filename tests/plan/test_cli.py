"""`quantship plan` end to end on files: plan.json in the run directory, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
from safetensors.numpy import save_file


def quantship(*args, cwd):
    return subprocess.run(
        [sys.executable, "-c", "from quantship.cli import main; main()", *args],
        cwd=cwd, capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"},
    )


def test_plan_writes_plan_json_into_the_run_dir(tmp_path, configs):
    model = tmp_path / "llama-2-13b"
    model.mkdir()
    (model / "config.json").write_text(json.dumps(configs["llama2_13b"]))
    run = quantship("plan", "--model", str(model), "--hardware", "h100", "--context", "2048",
                    "--concurrency", "4", "--format", "bf16", "--run-dir", "run", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    plan = json.loads((tmp_path / "run/plan/plan.json").read_text())
    assert plan["chosen"]["format"] == "bf16" and plan["chosen"]["fit"]["replicas_per_device"] == 2
    assert plan["chosen"]["fit"]["replicas_weights_only"] == 3
    manifest = json.loads((tmp_path / "run/plan/manifest.json").read_text())
    assert manifest["status"] == "complete" and "model_config" in manifest["inputs"]
    assert "--gpu-memory-utilization 0.45" in run.stdout


def test_real_checkpoint_sizes_the_bf16_candidate(tmp_path, configs):
    tiny = {**configs["smollm2"], "num_hidden_layers": 1, "hidden_size": 64, "num_attention_heads": 4,
            "num_key_value_heads": 2, "head_dim": 16, "intermediate_size": 128, "vocab_size": 256}
    (tmp_path / "config.json").write_text(json.dumps(tiny))
    save_file({"model.embed_tokens.weight": np.zeros((256, 64), dtype=np.float16),
               "model.layers.0.mlp.up_proj.weight": np.zeros((128, 64), dtype=np.float16)},
              str(tmp_path / "model.safetensors"))
    run = quantship("plan", "--model", str(tmp_path), "--hardware", "l4", "--run-dir", "run", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    plan = json.loads((tmp_path / "run/plan/plan.json").read_text())
    assert plan["params"] == {
        "linear": 128 * 64, "other": 256 * 64, "source": "safetensors headers", "total": 384 * 64,
    }
    assert plan["traffic"] == {"context": 8192, "concurrency": 32}
    bf16 = next(c for c in plan["candidates"] if c["format"] == "bf16")
    assert bf16["weights_bytes"] == (tmp_path / "model.safetensors").stat().st_size


def test_refused_pair_is_one_line_exit_2_and_writes_nothing(tmp_path, configs):
    (tmp_path / "config.json").write_text(json.dumps(configs["llama2_13b"]))
    run = quantship("plan", "--model", str(tmp_path), "--hardware", "h100", "--format", "gguf",
                    "--stack", "vllm", "--run-dir", "run", cwd=tmp_path)
    assert run.returncode == 2
    assert run.stderr.count("\n") == 1 and "--stack llama.cpp" in run.stderr
    assert not (tmp_path / "run/plan").exists()


def test_unchanged_plan_is_kept_and_a_changed_request_replans(tmp_path, configs):
    from quantship.plan.api import PlanArgs, plan_from_args, write_plan
    from quantship.rundir import RunDir

    model = tmp_path / "llama-3-8b"
    model.mkdir()
    (model / "config.json").write_text(json.dumps(configs["llama3_8b"]))
    runs = RunDir(tmp_path / "run")
    first = PlanArgs(model=model, hardware="h100", context=4096, concurrency=4)
    assert write_plan(runs, first, plan_from_args(first)) is True
    published = (tmp_path / "run/plan/manifest.json").read_text()
    assert write_plan(runs, first, plan_from_args(first)) is False  # same fingerprint: nothing rewritten
    assert (tmp_path / "run/plan/manifest.json").read_text() == published
    wider = PlanArgs(model=model, hardware="h100", context=8192, concurrency=4)
    assert write_plan(runs, wider, plan_from_args(wider)) is True
    assert json.loads((tmp_path / "run/plan/plan.json").read_text())["traffic"]["context"] == 8192


def test_stack_llamacpp_is_still_accepted_and_planned_as_llama_cpp(tmp_path, configs):
    (tmp_path / "config.json").write_text(json.dumps(configs["llama2_13b"]))
    run = quantship("plan", "--model", str(tmp_path), "--hardware", "h100", "--format", "gguf",
                    "--stack", "llamacpp", "--context", "2048", "--concurrency", "4", "--run-dir", "run", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    plan = json.loads((tmp_path / "run/plan/plan.json").read_text())
    assert plan["chosen"]["stack"] == "llama.cpp" and "llama-server" in run.stdout
