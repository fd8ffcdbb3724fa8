"""A variant's format is read from the artifact, its size from its files."""

from __future__ import annotations

import json

import numpy as np
import pytest
from gguf import GGUFWriter

from quantship.errors import InputError
from quantship.plan.variant import format_from_config, inspect_variant


def ct(weights, activations=None):
    """A compressed-tensors quantization_config as llm-compressor writes it."""
    group = {"targets": ["Linear"], "weights": weights, "input_activations": activations}
    return {"quantization_config": {"quant_method": "compressed-tensors", "config_groups": {"group_0": group}}}


W4 = {"num_bits": 4, "type": "int", "symmetric": True, "strategy": "group", "group_size": 128}
FP8 = {"num_bits": 8, "type": "float", "strategy": "channel"}
FP8_ACT = {"num_bits": 8, "type": "float", "dynamic": True, "strategy": "token"}
INT8 = {"num_bits": 8, "type": "int", "strategy": "channel"}
INT8_ACT = {"num_bits": 8, "type": "int", "dynamic": True, "strategy": "token"}


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({}, "bf16"),
        (ct(W4), "w4a16"),
        (ct(FP8, FP8_ACT), "w8a8-fp8"),
        (ct(INT8, INT8_ACT), "w8a8-int8"),
        ({"quantization_config": {"quant_method": "gptq", "bits": 4, "group_size": 128}}, "w4a16"),
        ({"quantization_config": {"quant_method": "awq", "bits": 4}}, "w4a16"),
        ({"quantization_config": {"quant_method": "fp8"}}, "w8a8-fp8"),
        ({"quantization_config": {"quant_method": "bitsandbytes", "load_in_4bit": True,
                                  "bnb_4bit_quant_type": "nf4"}}, "nf4"),
    ],
)
def test_format_from_quantization_config(config, expected):
    assert format_from_config(config) == expected


def test_unplanned_schemes_are_named_in_the_error():
    with pytest.raises(InputError, match="int8 \\(activations off\\)"):
        format_from_config(ct(INT8))  # W8A16
    with pytest.raises(InputError, match="'bitsandbytes'"):
        format_from_config({"quantization_config": {"quant_method": "bitsandbytes", "load_in_8bit": True}})


def test_safetensors_variant_size_is_the_files(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(ct(W4)))
    (tmp_path / "model-00001-of-00002.safetensors").write_bytes(b"x" * 1000)
    (tmp_path / "model-00002-of-00002.safetensors").write_bytes(b"x" * 234)
    (tmp_path / "tokenizer.json").write_text("{}")
    info = inspect_variant(tmp_path)
    assert (info.format, info.weights_bytes) == ("w4a16", 1234)
    assert len(info.files) == 2


def _gguf(path, file_type):
    writer = GGUFWriter(str(path), "llama")
    writer.add_file_type(file_type)
    writer.add_tensor("token_embd.weight", np.zeros((4, 32), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_gguf_variant_reads_file_type(tmp_path):
    _gguf(tmp_path / "model-Q4_K_M.gguf", 15)
    info = inspect_variant(tmp_path)
    assert info.format == "gguf-q4_k_m"
    assert info.weights_bytes == (tmp_path / "model-Q4_K_M.gguf").stat().st_size
    _gguf(tmp_path / "q8.gguf", 7)
    assert inspect_variant(tmp_path / "q8.gguf").format == "gguf-q8_0"


def test_gguf_type_quantship_does_not_plan(tmp_path):
    _gguf(tmp_path / "m.gguf", 2)  # MOSTLY_Q4_0
    with pytest.raises(InputError, match="MOSTLY_Q4_0.*Q4_K_M or Q8_0"):
        inspect_variant(tmp_path)


def test_f16_intermediate_next_to_the_quantized_gguf_is_ignored(tmp_path):
    _gguf(tmp_path / "model-f16.gguf", 1)  # MOSTLY_F16, what convert_hf_to_gguf writes first
    _gguf(tmp_path / "model-Q8_0.gguf", 7)
    info = inspect_variant(tmp_path)
    assert (info.format, info.files) == ("gguf-q8_0", ["model-Q8_0.gguf"])
    _gguf(tmp_path / "model-Q4_K_M.gguf", 15)
    with pytest.raises(InputError, match="exactly one"):
        inspect_variant(tmp_path)


def test_variant_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        inspect_variant(tmp_path / "missing")
    with pytest.raises(InputError, match="neither a config.json nor a .gguf"):
        inspect_variant(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(InputError, match="no weight files"):
        inspect_variant(tmp_path)
