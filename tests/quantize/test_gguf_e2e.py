"""GGUF variants of the demo model, made by the real llama.cpp toolchain and reloaded by llama.cpp.

Needs `quantship setup llama.cpp` and the demo model package; skips (with the reason)
otherwise, fails under CI.
"""

from __future__ import annotations

import json

import pytest
from gguf import GGUFReader
from rich.console import Console

from quantship.quantize.base import QuantizeContext
from quantship.quantize.gguf_backend import BACKEND
from quantship.quantize.spec import VariantSpec
from quantship.rundir import RunDir, sha256_file
from tests.support.budget import setup_budget
from tests.support.requires import requires

pytestmark = [pytest.mark.e2e, requires("llama.cpp")]

PROMPT = "The capital of France is Paris. The capital of Germany is"
DEMO_TENSORS = 272  # 30 blocks x 9 + token_embd + output_norm (tied embeddings: no output.weight)


@pytest.fixture(scope="module")
@setup_budget(300)
def ctx(demo_checkpoint, tmp_path_factory) -> QuantizeContext:
    checkpoint = demo_checkpoint
    from quantship.data.calibration import load_calibration
    from quantship.stages.calibrate import CalibrationOptions, run_calibrate

    console = Console(stderr=True)
    run_dir = RunDir(tmp_path_factory.mktemp("gguf-run"))
    run_calibrate(checkpoint, run_dir, CalibrationOptions(samples=16, seq_len=256), console)
    return QuantizeContext(checkpoint, load_calibration(run_dir), run_dir, console)


def produce(ctx: QuantizeContext, **spec):
    variant = VariantSpec(**spec)
    BACKEND.check(variant, ctx)
    out_dir = ctx.run_dir.root / "out" / variant.name
    out_dir.mkdir(parents=True)
    return out_dir, BACKEND.quantize(variant, ctx, out_dir)


def file_types(path) -> dict[str, str]:
    return {t.name: t.tensor_type.name for t in GGUFReader(path).tensors}


def tensor_bytes(path) -> dict[str, bytes]:
    return {t.name: bytes(t.data) for t in GGUFReader(path).tensors}


def greedy(path, max_tokens: int = 4) -> str:
    from llama_cpp import Llama

    llm = Llama(model_path=str(path), n_ctx=256, n_threads=2, verbose=False)
    try:
        return llm.create_completion(PROMPT, max_tokens=max_tokens, temperature=0.0)["choices"][0]["text"]
    finally:
        llm.close()


def next_token_top(path, k: int = 5) -> dict[str, float]:
    """The k most likely next tokens after PROMPT (token text -> log-probability), by llama.cpp."""
    from llama_cpp import Llama

    llm = Llama(model_path=str(path), n_ctx=256, n_threads=2, logits_all=True, verbose=False)
    try:
        choice = llm.create_completion(PROMPT, max_tokens=1, temperature=0.0, logprobs=k)["choices"][0]
        return dict(choice["logprobs"]["top_logprobs"][0])
    finally:
        llm.close()


def assert_berlin_in_top5(path) -> None:
    """A 4-bit variant's greedy answer may drift (the demo model is small); the right answer
    must stay among its five most likely next tokens."""
    top = next_token_top(path)
    assert " Berlin" in top, f"' Berlin' is not in the top 5 {top}"


def test_q8_0_is_all_q8_0_and_says_berlin(ctx):
    # `quantize --imatrix` applies to every GGUF variant; Q8_0 ignores it, with a warning.
    out_dir, output = produce(ctx, name="q8", method="gguf", scheme="Q8_0", imatrix=True)
    path = out_dir / "model.gguf"
    types = file_types(path)
    assert len(types) == DEMO_TENSORS == output.details["tensor_count"]
    assert output.details["tensor_types"] == types
    matrices = [n for n, t in types.items() if not n.endswith("norm.weight")]
    assert {types[n] for n in matrices} == {"Q8_0"}
    assert {t for n, t in types.items() if n.endswith("norm.weight")} == {"F32"}
    assert output.details["fallbacks"] == [] and output.details["imatrix"] is None
    assert output.warnings == ["Q8_0 does not use an importance matrix: imatrix was not computed"]
    # Q8_0 is 8.5 bits per weight; the F32 norms add a little.
    assert 8.5 < output.bits_per_weight < 8.6
    assert sorted(p.name for p in out_dir.iterdir()) == ["logs", "model.gguf"]
    assert output.details["tokenizer_check"]["matches"] is True
    assert greedy(path).startswith(" Berlin")


def test_q4_k_m_records_and_warns_about_fallbacks_on_576_wide_rows(ctx):
    out_dir, output = produce(ctx, name="q4km", method="gguf", scheme="Q4_K_M")
    types = file_types(out_dir / "model.gguf")
    fallbacks = output.details["fallbacks"]
    assert fallbacks, "576-wide rows cannot hold 256-blocks: llama.cpp must fall back"
    for item in fallbacks:
        assert item["row_length"] % 256 != 0
        assert types[item["tensor"]] == item["used"]  # the manifest says what is in the file
    assert f"{len(fallbacks)} of {DEMO_TENSORS} tensors" in output.warnings[0]
    assert "Q4_K" in output.details["type_histogram"]  # the 1536-wide ffn_down rows do fit
    print(f"\nQ4_K_M: {len(fallbacks)} fallbacks, {output.bits_per_weight} bpw, histogram {output.details['type_histogram']}")
    assert_berlin_in_top5(out_dir / "model.gguf")


def test_q4_k_m_with_imatrix_uses_the_calibration_text(ctx):
    plain_dir = ctx.run_dir.root / "out" / "q4km"
    out_dir, output = produce(ctx, name="q4km-imatrix", method="gguf", scheme="Q4_K_M", imatrix=True)
    info = output.details["imatrix"]
    assert info["calibration_sha256"] == ctx.calibration.sha256
    assert info["chunks_computed"] > 0 and info["context"] == 256
    assert (out_dir / "imatrix.gguf").stat().st_size > 0
    assert file_types(out_dir / "model.gguf") == file_types(plain_dir / "model.gguf")
    # Same types, different values: the importance matrix changed the rounding.
    assert sha256_file(out_dir / "model.gguf") != sha256_file(plain_dir / "model.gguf")
    assert_berlin_in_top5(out_dir / "model.gguf")


def test_variants_of_one_run_share_one_conversion_and_one_importance_matrix(ctx):
    """Recovery requantizes repeatedly: the BF16 GGUF and the imatrix are made once per run."""
    cache = ctx.run_dir.root / "cache" / "gguf"
    conversions = sorted(cache.glob("model-*-bf16.gguf"))
    assert len(conversions) == 1
    stamp = conversions[0].stat().st_mtime_ns
    out_dir, output = produce(ctx, name="q4km-imatrix-again", method="gguf", scheme="Q4_K_M", imatrix=True)
    assert sorted(cache.glob("model-*-bf16.gguf")) == conversions and conversions[0].stat().st_mtime_ns == stamp
    assert len(list(cache.glob("imatrix-*.gguf"))) == 1
    assert output.details["imatrix"]["chunks_computed"] > 0  # read back from the cached run's log
    first = ctx.run_dir.root / "out" / "q4km-imatrix" / "model.gguf"
    assert tensor_bytes(out_dir / "model.gguf") == tensor_bytes(first)  # metadata differs: it names the imatrix path
    assert not list(cache.glob(".partial-*"))


def test_layer_overrides_keep_named_layers_at_higher_precision(ctx):
    overrides = [{"pattern": "lm_head", "precision": "8bit"}, {"pattern": r"model\.layers\.0\.", "precision": "bf16"}]
    out_dir, output = produce(ctx, name="q40-overrides", method="gguf", scheme="Q4_0", overrides=overrides)
    types = file_types(out_dir / "model.gguf")
    assert types["token_embd.weight"] == "Q8_0"  # tied: lm_head is token_embd
    assert {t for n, t in types.items() if n.startswith("blk.0.") and not n.endswith("norm.weight")} == {"BF16"}
    assert types["blk.1.attn_q.weight"] == "Q4_0"
    assert [o["pattern"] for o in output.details["overrides"]] == ["lm_head", r"model\.layers\.0\."]
    # layer 0 in bf16 and lm_head in 8 bits: closer to the baseline than plain Q4_0
    assert_berlin_in_top5(out_dir / "model.gguf")


def test_convert_a_compressed_tensors_variant_to_gguf_with_lineage(ctx):
    """RTN W4 (group 64) with llm-compressor -> dequantized bf16 -> GGUF Q8_0."""
    import torch
    from llmcompressor import oneshot
    from llmcompressor.modifiers.quantization import QuantizationModifier
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(ctx.checkpoint, dtype=torch.bfloat16)
    weights = {"num_bits": 4, "type": "int", "symmetric": True, "strategy": "group", "group_size": 64}
    oneshot(model=model, recipe=QuantizationModifier(config_groups={"g": {"targets": ["Linear"], "weights": weights}}, ignore=["lm_head"]))
    with ctx.run_dir.stage("variants/w4g64", {"method": "rtn"}, {}) as stage:
        model.save_pretrained(stage.staging, save_compressed=True)
        AutoTokenizer.from_pretrained(ctx.checkpoint).save_pretrained(stage.staging)

    out_dir, output = produce(ctx, name="w4g64-q8", method="convert", scheme="Q8_0", source="w4g64")
    lineage = output.details["lineage"]
    assert lineage["source_variant"] == "w4g64" and lineage["source_format"] == "compressed-tensors"
    assert lineage["source_manifest_fingerprint"] == ctx.run_dir.manifest("variants/w4g64")["fingerprint"]
    assert [w["group_size"] for w in lineage["source_quantization"]["weights"].values()] == [64]
    assert output.details["tensor_count"] == DEMO_TENSORS
    assert sorted(p.name for p in out_dir.iterdir()) == ["logs", "model.gguf"]
    assert_berlin_in_top5(out_dir / "model.gguf")
    json.dumps(output.details)  # the manifest must be able to hold it


def test_a_tokenizer_llama_cpp_would_misread_is_refused(ctx, tmp_path):
    """A byte-level BPE tokenizer.json with byte_fallback and a SentencePiece-style decoder
    makes the converter write a "llama" vocabulary that llama.cpp cannot tokenize with."""
    from quantship.quantize.gguf_tokcheck import TokenizerMismatch

    misleading = tmp_path / "misleading"
    misleading.mkdir()
    for file in ctx.checkpoint.iterdir():
        (misleading / file.name).symlink_to(file)
    tokenizer = json.loads((ctx.checkpoint / "tokenizer.json").read_text(encoding="utf-8"))
    tokenizer["model"]["byte_fallback"] = True
    tokenizer["decoder"] = {"type": "Sequence", "decoders": [{"type": "ByteFallback"}, {"type": "Fuse"}]}
    (misleading / "tokenizer.json").unlink()
    (misleading / "tokenizer.json").write_text(json.dumps(tokenizer), encoding="utf-8")
    misled = QuantizeContext(misleading, None, ctx.run_dir, ctx.console)
    with pytest.raises(TokenizerMismatch, match="vocabulary type 'llama'"):
        produce(misled, name="misled", method="gguf", scheme="Q8_0")
