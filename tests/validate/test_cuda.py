"""The transformers scorer and the quality gate on a CUDA GPU, on the tiny Llama.

Marked `gpu`: skipped without CUDA (tests/support/plugin.py), under CI too. These have
never run on a GPU (README, Development).
"""

from __future__ import annotations

import pytest
import torch

from quantship.models.loading import load_tokenizer
from quantship.rundir import read_json
from quantship.validate.scorers import TransformersScorer
from tests.support.recover_options import SMALL
from tests.support.validate_runs import run_cli

pytestmark = pytest.mark.gpu


def test_transformers_scorer_on_cuda_gives_the_cpu_logits(tiny_checkpoint):
    tokenizer = load_tokenizer(tiny_checkpoint)
    ids = torch.tensor([tokenizer("The river bends past the old mill where farmers once brought grain.")["input_ids"]])
    on_gpu = TransformersScorer(tiny_checkpoint, tokenizer, "float32", "cuda")
    on_cpu = TransformersScorer(tiny_checkpoint, tokenizer, "float32", "cpu")
    assert on_gpu.device.type == "cuda"
    with torch.inference_mode():
        gpu, cpu = on_gpu.logits(ids).float().cpu(), on_cpu.logits(ids).float()
    # same float32 weights and inputs; only the kernels' summation order differs
    assert torch.allclose(gpu, cpu, atol=1e-3, rtol=1e-3)


def test_gate_on_cuda_passes_the_w8_variant_and_fails_the_broken_one(validate_run, monkeypatch, capsys):
    root = validate_run.root
    assert read_json(root / "baseline" / "baseline.json")["eval"]["device"] == "cuda"  # the default with a GPU
    code, out, err = run_cli(monkeypatch, capsys, "--run-dir", str(root), "--select", "smallest-passing", *SMALL)
    assert code == 1, (out, err)
    assert read_json(root / "validation" / "w8.json")["passed"] is True
    broken = read_json(root / "validation" / "broken.json")
    assert broken["passed"] is False and "perplexity" in broken["failed_checks"]
    assert read_json(root / "validation" / "selected.json")["selected"] == "w8"
