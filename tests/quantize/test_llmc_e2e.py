"""The README's llm-compressor variants on the demo model, reloaded and scored.

Small calibration (16 x 256 tokens) keeps the file within minutes on 2 cores. The demo
model is a 135M model reparametrized off the Q4_1 grid of the file it comes from, on a
single prompt, so these variants prove the pipeline works, not how much quality a method
keeps.
"""

from __future__ import annotations

import pytest
import torch

from quantship.evaluate.baseline import BaselineOptions, run_baseline
from quantship.progress import stderr_console
from quantship.quantize.spec import VariantSpec
from quantship.quantize.variants import run_quantize
from quantship.rundir import RunDir, read_json
from quantship.stages.calibrate import CalibrationOptions, run_calibrate
from tests.support.budget import setup_budget

pytestmark = pytest.mark.e2e

PROMPT = "The capital of France is Paris. The capital of Germany is"
VARIANTS = [
    VariantSpec(name="rtn-w4a16-g64", method="rtn", scheme="W4A16", group_size=64),
    VariantSpec(name="gptq-w4a16-g64", method="gptq", scheme="W4A16", group_size=64),
    VariantSpec(name="int8-w8a8", method="smoothquant-gptq", scheme="W8A8"),
    VariantSpec(name="fp8-dynamic", method="fp8-dynamic"),
]
# (quantized-layer bits/weight, quantized safetensors dtypes): 4-bit codes + a bf16 scale per
# 64 weights; int8/fp8 codes + a bf16 scale per output channel
EXPECTED = {
    "rtn-w4a16-g64": (4.25, "I32"),
    "gptq-w4a16-g64": (4.25, "I32"),
    "int8-w8a8": (8.0, "I8"),
    "fp8-dynamic": (8.0, "F8_E4M3"),
}


@pytest.fixture(scope="module")
@setup_budget(2700)  # baseline, calibration and four llm-compressor variants: ~10 min idle, 2 cores
def demo_run(demo_checkpoint, tmp_path_factory) -> tuple[RunDir, list]:
    run = RunDir(tmp_path_factory.mktemp("demo") / "run")
    console = stderr_console()
    run_baseline(demo_checkpoint, run, BaselineOptions(window=128, stride=128, max_windows=1, max_new_tokens=4), console)
    run_calibrate(demo_checkpoint, run, CalibrationOptions(samples=16, seq_len=256), console)
    return run, run_quantize(run, VARIANTS, console)


@pytest.mark.parametrize("spec", VARIANTS, ids=lambda s: s.name)
def test_variant_is_written_with_measured_bits(demo_run, demo_checkpoint, spec):
    run, results = demo_run
    result = next(r for r in results if r.name == spec.name)
    assert result.status == "done", result.error
    manifest = read_json(run.stage_dir(f"variants/{spec.name}") / "manifest.json")
    bits, dtype = EXPECTED[spec.name]
    assert bits <= manifest["details"]["quantized_linear_bits_per_weight"] < bits + 0.3
    assert dtype in manifest["details"]["tensor_dtypes"]
    assert manifest["size_bytes"] < sum(f.stat().st_size for f in demo_checkpoint.glob("*.safetensors"))


def next_token_logprobs(folder, prompt: str) -> tuple[torch.Tensor, object]:
    """log-softmax over the vocabulary for the token after `prompt`, in float32."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(ids).logits[0, -1].float()
    return torch.log_softmax(logits, -1), tokenizer


def token_id(tokenizer, word: str) -> int:
    [ident] = tokenizer(word, add_special_tokens=False).input_ids  # each answer is one token
    return ident


@pytest.mark.parametrize("spec", VARIANTS, ids=lambda s: s.name)
def test_variant_reloads_through_transformers_and_keeps_berlin_near_the_top(demo_run, spec):
    run, _ = demo_run
    logprobs, tokenizer = next_token_logprobs(run.stage_dir(f"variants/{spec.name}"), PROMPT)
    berlin = token_id(tokenizer, " Berlin")
    top5 = logprobs.topk(5).indices.tolist()
    # Every variant, even the one that loses the greedy answer, keeps the right one in its top 5
    # (measured: second for RTN, first for the others).
    assert berlin in top5, f"{spec.name}: top 5 {tokenizer.convert_ids_to_tokens(top5)}"


# On demo format 2 (weights on the file's Q4_1 grid) RTN W4A16 g64 ranked " Germany" above
# " Berlin" and was a strict xfail; on format 3 (reparametrized off every grid) the CI run of
# 2026-12-02 saw that xfail pass, so every variant is held to the ranking. RTN is
# deterministic, so this is not a flip between runs.
@pytest.mark.parametrize("spec", VARIANTS, ids=lambda s: s.name)
def test_variant_ranks_berlin_above_the_wrong_answers(demo_run, spec):
    run, _ = demo_run
    logprobs, tokenizer = next_token_logprobs(run.stage_dir(f"variants/{spec.name}"), PROMPT)
    berlin = float(logprobs[token_id(tokenizer, " Berlin")])
    for wrong in (" Germany", " Paris"):
        assert berlin > float(logprobs[token_id(tokenizer, wrong)]), f"{spec.name}: {wrong!r} ranks above ' Berlin'"
    assert int(logprobs.argmax()) == token_id(tokenizer, " Berlin"), f"{spec.name}: greedy is not ' Berlin'"
