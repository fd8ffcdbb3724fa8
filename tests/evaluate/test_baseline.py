"""The baseline stage on a tiny model: what it stores, and when it recomputes."""

from __future__ import annotations

import math

import pytest
from safetensors.torch import load_file

from quantship.errors import InputError
from quantship.evaluate.baseline import BaselineOptions, run_baseline
from quantship.layout import baseline_checkpoint
from quantship.progress import stderr_console
from quantship.rundir import RunDir, read_json

OPTIONS = BaselineOptions(window=64, stride=32, max_windows=6, batch_size=2, topk=8, max_new_tokens=6)


def test_baseline_records_perplexity_topk_references_and_probes(tiny_checkpoint, tmp_path):
    run = RunDir(tmp_path / "run")
    result, skipped = run_baseline(tiny_checkpoint, run, OPTIONS, stderr_console())
    assert not skipped
    folder = run.stage_dir("baseline")
    assert read_json(folder / "baseline.json") == result
    ppl = result["perplexity"]
    assert ppl["windows"] == 6 and ppl["tokens_scored"] == 63 + 5 * 32
    eval_tensors = load_file(str(folder / "eval.safetensors"))
    assert eval_tensors["topk_ids"].shape == (ppl["tokens_scored"], 8)
    mean_nll = -float(eval_tensors["target_logprobs"].double().mean())
    assert math.isclose(ppl["value"], math.exp(mean_nll), rel_tol=1e-6)
    # a random 2-layer model is close to uniform over its vocabulary
    assert 0.3 * result["checkpoint"]["vocab_size"] < ppl["value"] < 3 * result["checkpoint"]["vocab_size"]

    references = read_json(folder / "references.json")
    ref_tensors = load_file(str(folder / "references.safetensors"))
    for ref in references["references"]:
        assert len(ref["ids"]) <= 6
        assert ref_tensors[f"{ref['id']}.topk_ids"].shape[0] == len(ref["ids"])
        # greedy: every generated token is the model's own top-1
        assert ref_tensors[f"{ref['id']}.topk_ids"][:, 0].tolist() == ref["ids"]
    assert result["probes"]["total"] == len(references["probes"]) > 0
    assert baseline_checkpoint(run) == tiny_checkpoint.resolve()


def test_baseline_skips_unchanged_and_reruns_on_change(tiny_checkpoint, tmp_path):
    run = RunDir(tmp_path / "run")
    first, _ = run_baseline(tiny_checkpoint, run, OPTIONS, stderr_console())
    _, skipped = run_baseline(tiny_checkpoint, run, OPTIONS, stderr_console())
    assert skipped
    _, skipped = run_baseline(tiny_checkpoint, run, OPTIONS.model_copy(update={"topk": 4}), stderr_console())
    assert not skipped
    # a changed weight file is a changed input
    from safetensors.torch import save_file

    weights = load_file(str(tiny_checkpoint / "model.safetensors"))
    weights["model.norm.weight"] = weights["model.norm.weight"] * 2
    save_file(weights, str(tiny_checkpoint / "model.safetensors"), metadata={"format": "pt"})
    second, skipped = run_baseline(tiny_checkpoint, run, OPTIONS, stderr_console())
    assert not skipped and second["perplexity"]["value"] != first["perplexity"]["value"]


def test_broken_checkpoint_writes_nothing(tiny_checkpoint, tmp_path):
    (tiny_checkpoint / "tokenizer.json").unlink()
    (tiny_checkpoint / "tokenizer_config.json").unlink()
    with pytest.raises(InputError):
        run_baseline(tiny_checkpoint, RunDir(tmp_path / "run"), OPTIONS, stderr_console())
    assert not (tmp_path / "run").exists()
