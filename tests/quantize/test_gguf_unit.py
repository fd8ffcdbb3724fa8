"""Fast tests of the GGUF backend's own logic: schemes, read-back, fallbacks, overrides, refusals."""

from __future__ import annotations

import json
import shutil
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType, GGUFWriter
from gguf.quants import quantize
from rich.console import Console

from quantship.errors import InputError
from quantship.quantize.base import QuantizeContext
from quantship.quantize.gguf_backend import GGUFBackend
from quantship.quantize.gguf_inspect import open_reader, parse_fallbacks, read_summary, remembered_summary
from quantship.quantize.gguf_names import hf_to_gguf_names, resolve_overrides, tensor_type_rules
from quantship.quantize.gguf_pipeline import _check_disk, _fallback_warnings
from quantship.quantize.gguf_types import SCHEMES, scheme_for
from quantship.quantize.spec import LayerOverride, VariantSpec
from quantship.rundir import RunDir

# Lines as llama.cpp's tensor_type_fallback() prints them (src/llama-quant.cpp).
QUANTIZE_LOG = """\
[   2/ 272]                   blk.0.attn_k.weight - [  576,   192,     1,     1], type =   bf16, converting to q4_K .. \
warning: blk.0.attn_k.weight                  - ncols    576 not divisible by 256 (required for type    q4_K) -> falling back to    q5_0
[   3/ 272]                   blk.0.ffn_down.weight - [ 1536,   576,     1,     1], type =   bf16, converting to q6_K .. \
size =     1.69 MiB ->     0.69 MiB
warning: blk.0.attn_v.weight                  - ncols    576 not divisible by 256 (required for type    q6_K) -> falling back to    q8_0
warning: odd.weight                           - ncols     33 not divisible by 256 (required for type    q4_K) \
(WARNING: must use F16 due to unusual shape) -> falling back to     f16
llama_model_quantize_impl: WARNING: 3 of 272 tensor(s) required fallback quantization
"""


def test_scheme_names_are_case_insensitive_and_unknown_is_none():
    assert scheme_for("q4_k_m") is SCHEMES["Q4_K_M"]
    assert scheme_for(" Q8_0 ").main == "Q8_0"
    assert scheme_for("Q4_K_M").block == 256
    assert scheme_for("W4A16") is None
    assert scheme_for(None) is None


def test_parse_fallbacks_reads_every_fallback_line():
    fallbacks = parse_fallbacks(QUANTIZE_LOG)
    assert fallbacks == [
        {"tensor": "blk.0.attn_k.weight", "row_length": 576, "block": 256, "requested": "Q4_K", "used": "Q5_0"},
        {"tensor": "blk.0.attn_v.weight", "row_length": 576, "block": 256, "requested": "Q6_K", "used": "Q8_0"},
        {"tensor": "odd.weight", "row_length": 33, "block": 256, "requested": "Q4_K", "used": "F16"},
    ]
    assert parse_fallbacks("[ 1/ 2] token_embd.weight - converting to q8_0 .. size = 1 MiB") == []


def test_fallback_warning_names_counts_and_row_lengths():
    warnings = _fallback_warnings(parse_fallbacks(QUANTIZE_LOG)[:2], SCHEMES["Q4_K_M"], 272)
    assert len(warnings) == 1
    assert "2 of 272 tensors" in warnings[0]
    assert "[576]" in warnings[0] and "1x Q4_K->Q5_0" in warnings[0] and "1x Q6_K->Q8_0" in warnings[0]
    assert _fallback_warnings([], SCHEMES["Q4_K_M"], 272) == []


def _tiny_gguf(path: Path, matrix_type: GGMLQuantizationType) -> Path:
    """One block: an 8 x 64 attention matrix at `matrix_type` and an F32 norm."""
    writer = GGUFWriter(path, "llama")
    writer.add_block_count(1)
    rng = np.random.default_rng(0)
    matrix = rng.standard_normal((8, 64), dtype=np.float32)
    packed = quantize(matrix, matrix_type)
    writer.add_tensor("blk.0.attn_q.weight", packed, raw_shape=packed.shape, raw_dtype=matrix_type)
    writer.add_tensor("blk.0.attn_norm.weight", np.ones(64, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_read_summary_measures_bits_per_weight_from_written_bytes(tmp_path):
    summary = read_summary(_tiny_gguf(tmp_path / "tiny.gguf", GGMLQuantizationType.Q8_0))
    assert summary.architecture == "llama" and summary.block_count == 1
    assert summary.tensor_types == {"blk.0.attn_q.weight": "Q8_0", "blk.0.attn_norm.weight": "F32"}
    assert summary.histogram() == {"F32": 1, "Q8_0": 1}
    assert summary.matrices() == ["blk.0.attn_q.weight"]
    # Q8_0: 34 bytes per 32 weights; F32: 4 bytes per weight.
    expected = (8 * 64 // 32 * 34 + 64 * 4) * 8 / (8 * 64 + 64)
    assert summary.bits_per_weight == pytest.approx(expected)


def test_a_remembered_summary_needs_no_reader_until_its_file_is_replaced(tmp_path):
    """The allocator's candidate files are read again on every rerun: their summary is kept beside them."""
    path = _tiny_gguf(tmp_path / "candidate.gguf", GGMLQuantizationType.Q8_0)
    first = remembered_summary(path)

    def parse_again():
        raise AssertionError("the kept summary was not used")

    assert remembered_summary(path, parse_again) == first
    _tiny_gguf(path, GGMLQuantizationType.Q4_0)  # replaced in place: another size
    opened = []
    replaced = remembered_summary(path, lambda: opened.append(path) or open_reader(path))
    assert opened == [path]
    assert replaced.tensor_types["blk.0.attn_q.weight"] == "Q4_0" and first.tensor_types["blk.0.attn_q.weight"] == "Q8_0"


def test_read_summary_refuses_a_file_that_is_not_gguf(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf file at all")
    with pytest.raises(InputError, match="not a readable GGUF"):
        read_summary(bad)


LLAMA_WEIGHTS = [
    "model.embed_tokens.weight",
    "model.norm.weight",
    *[
        f"model.layers.{i}.{part}.weight"
        for i in range(2)
        for part in (
            "input_layernorm", "post_attention_layernorm", "self_attn.q_proj", "self_attn.k_proj",
            "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj",
        )
    ],
]
GGUF_MATRICES = ["token_embd.weight"] + [
    f"blk.{i}.{t}.weight" for i in range(2) for t in ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")
]


def test_overrides_map_hf_module_regexes_to_gguf_tensors():
    mapping = hf_to_gguf_names(LLAMA_WEIGHTS, "llama", 2)
    assert mapping["model.layers.1.self_attn.k_proj"] == "blk.1.attn_k.weight"
    overrides = [
        LayerOverride(pattern="lm_head", precision="8bit"),
        LayerOverride(pattern=r"model\.layers\.0\.", precision="bf16"),
        LayerOverride(pattern=r"self_attn\.[kv]_proj", precision="8bit"),
    ]
    resolved = resolve_overrides(overrides, mapping, GGUF_MATRICES, tied_embeddings=True)
    # Tied embeddings: the output layer reads token_embd, so lm_head selects it.
    assert resolved[0].tensors == ["token_embd.weight"] and resolved[0].ggml_type == "Q8_0"
    assert resolved[1].tensors == sorted(t for t in GGUF_MATRICES if t.startswith("blk.0."))
    assert resolved[1].ggml_type == "BF16"
    assert resolved[2].tensors == ["blk.0.attn_k.weight", "blk.0.attn_v.weight", "blk.1.attn_k.weight", "blk.1.attn_v.weight"]

    rules = tensor_type_rules(resolved)
    assert r"^token_embd\.weight$=q8_0" in rules
    # The first override naming a tensor wins: layer 0's k/v stay bf16.
    assert r"^blk\.0\.attn_k\.weight$=bf16" in rules and r"^blk\.1\.attn_k\.weight$=q8_0" in rules
    assert len(rules) == len({r.split("=")[0] for r in rules})


def test_override_matching_nothing_is_an_input_error():
    mapping = hf_to_gguf_names(LLAMA_WEIGHTS, "llama", 2)
    with pytest.raises(InputError, match="matches no weight matrix"):
        resolve_overrides([LayerOverride(pattern="vision_tower")], mapping, GGUF_MATRICES, tied_embeddings=False)
    # Without tied embeddings and without an lm_head weight, lm_head matches nothing.
    with pytest.raises(InputError, match="'lm_head'"):
        resolve_overrides([LayerOverride(pattern="lm_head")], mapping, GGUF_MATRICES, tied_embeddings=False)


def _context(tmp_path: Path, calibration=None) -> QuantizeContext:
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir(exist_ok=True)
    (checkpoint / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    return QuantizeContext(checkpoint, calibration, RunDir(tmp_path / "run"), Console(stderr=True))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (dict(scheme="Q4_K_XL"), "unknown GGUF scheme 'Q4_K_XL'"),
        (dict(scheme=None), "unknown GGUF scheme None"),
        (dict(scheme="Q4_K_M", group_size=128), "group_size do not apply to GGUF"),
        (dict(scheme="Q4_0", symmetric=False, act_order=True), "symmetric, act_order do not apply"),
        (dict(scheme="Q4_K_M", imatrix=True), "no calibration data"),
        (dict(scheme="BF16", overrides=[{"pattern": "lm_head"}]), "BF16 is unquantized"),
        (dict(scheme="Q8_0", source="w4a16"), "`source` is only for method convert"),
    ],
)
def test_check_refuses_bad_requests_with_one_line_fix(tmp_path, spec, message):
    variant = VariantSpec(name="v", method="gguf", **spec)
    with pytest.raises(InputError, match=message.replace("(", r"\(")) as raised:
        GGUFBackend().check(variant, _context(tmp_path))
    assert "\n" not in raised.value.one_line() and raised.value.fix


def test_convert_refuses_a_missing_or_non_compressed_tensors_source(tmp_path):
    ctx = _context(tmp_path)
    with pytest.raises(InputError, match="needs `source: <variant name>`"):
        GGUFBackend().check(VariantSpec(name="c", method="convert", scheme="Q8_0"), ctx)
    spec = VariantSpec(name="c", method="convert", scheme="Q8_0", source="w4a16")
    with pytest.raises(InputError, match=r"variants/w4a16 is missing or incomplete; run `quantship quantize"):
        GGUFBackend().check(spec, ctx)
    with ctx.run_dir.stage("variants/w4a16", {}, {}) as stage:
        (stage.staging / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    with pytest.raises(InputError, match="not a compressed-tensors checkpoint"):
        GGUFBackend().check(spec, ctx)


def test_disk_check_refuses_when_the_variant_cannot_fit(tmp_path, monkeypatch):
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    (checkpoint / "model.safetensors").write_bytes(b"\0" * 1000)
    usage = namedtuple("usage", "total used free")
    free = {"bytes": 3_000}
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10_000, 10_000 - free["bytes"], free["bytes"]))
    _check_disk(tmp_path / "run", checkpoint, extra_copies=0)  # float GGUF + output: ~2.2 kB fit
    free["bytes"] = 2_000
    with pytest.raises(InputError, match="not enough disk space"):
        _check_disk(tmp_path / "run", checkpoint, extra_copies=0)
    free["bytes"] = 3_000
    with pytest.raises(InputError, match="not enough disk space"):
        _check_disk(tmp_path / "run", checkpoint, extra_copies=1)  # convert keeps a dequantized copy too
