"""identify(): what an artifact on disk is, read from its files, the one answer every stage uses."""

from __future__ import annotations

import json

import pytest

from quantship.errors import InputError
from quantship.formats.identify import gguf_file_type, identify
from quantship.plan.variant import inspect_variant
from tests.support.serve_files import write_gguf


def ct(weights, activations=None):
    """A compressed-tensors quantization_config as llm-compressor writes it."""
    group = {"targets": ["Linear"], "weights": weights, "input_activations": activations}
    return {"quant_method": "compressed-tensors", "config_groups": {"group_0": group}}


W4 = {"num_bits": 4, "type": "int", "symmetric": True, "strategy": "group", "group_size": 128}
FP8 = {"num_bits": 8, "type": "float", "strategy": "channel"}
FP8_ACT = {"num_bits": 8, "type": "float", "dynamic": True, "strategy": "token"}
INT8 = {"num_bits": 8, "type": "int", "strategy": "channel"}
INT8_ACT = {"num_bits": 8, "type": "int", "dynamic": True, "strategy": "token"}
NF4 = {"quant_method": "bitsandbytes", "load_in_4bit": True, "bnb_4bit_quant_type": "nf4"}


def checkpoint(folder, quant=None):
    folder.mkdir(parents=True, exist_ok=True)
    config = {"architectures": ["LlamaForCausalLM"], **({"quantization_config": quant} if quant else {})}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "model.safetensors").write_bytes(b"\0" * 64)
    return folder


@pytest.mark.parametrize(
    ("quant", "method", "expected", "vllm"),
    [
        (None, None, "bf16", None),
        (ct(W4), "compressed-tensors", "w4a16", "compressed-tensors"),
        (ct(FP8, FP8_ACT), "compressed-tensors", "w8a8-fp8", "compressed-tensors"),
        (ct(INT8, INT8_ACT), "compressed-tensors", "w8a8-int8", "compressed-tensors"),
        ({"quant_method": "gptq", "bits": 4, "group_size": 128}, "gptq", "w4a16", "gptq"),
        ({"quant_method": "awq", "bits": 4}, "awq", "w4a16", "awq"),
        ({"quant_method": "fp8"}, "fp8", "w8a8-fp8", "fp8"),
        (NF4, "bitsandbytes", "nf4", "bitsandbytes"),
    ],
)
def test_checkpoint_format_from_its_quantization_config(tmp_path, quant, method, expected, vllm):
    artifact = identify(checkpoint(tmp_path / "m", quant))
    assert (artifact.container, artifact.quant_method, artifact.format) == ("safetensors", method, expected)
    assert artifact.vllm_quantization == vllm and artifact.runtime == "transformers"


def test_schemes_outside_the_matrix_have_no_format_but_are_still_identified(tmp_path):
    w8a16 = identify(checkpoint(tmp_path / "w8a16", ct(INT8)))
    assert (w8a16.quant_method, w8a16.format, w8a16.label) == ("compressed-tensors", None, "compressed-tensors")
    fp4 = identify(checkpoint(tmp_path / "fp4", {"quant_method": "bitsandbytes", "load_in_4bit": True}))
    assert fp4.format is None  # transformers' default 4-bit type is fp4, not nf4
    with pytest.raises(InputError, match="compressed-tensors is not a format quantship plans"):
        inspect_variant(tmp_path / "w8a16")


@pytest.mark.parametrize(("file_type", "expected"), [("Q4_K_M", "gguf-q4_k_m"), ("Q8_0", "gguf-q8_0"), ("Q4_0", None)])
def test_gguf_type_comes_from_the_header_not_the_name(tmp_path, file_type, expected):
    path = write_gguf(tmp_path / "model.Q8_0.gguf", file_type)  # a misleading name
    artifact = identify(path)
    assert (artifact.gguf_type, artifact.format, artifact.runtime) == (file_type, expected, "llama.cpp")
    assert artifact.vllm_quantization == "gguf" and artifact.weights_bytes == path.stat().st_size


def test_header_reader_agrees_with_gguf_on_the_demo_file():
    from gguf import GGUFReader, LlamaFileType

    from quantship.models.demo import locate_demo_gguf

    path = locate_demo_gguf()
    field = GGUFReader(path).get_field("general.file_type")
    assert gguf_file_type(path) == LlamaFileType(int(field.contents())).name.removeprefix("MOSTLY_")


def test_folder_with_an_importance_matrix_or_a_float_intermediate_picks_the_model(tmp_path):
    write_gguf(tmp_path / "model.gguf", "Q4_0")
    write_gguf(tmp_path / "imatrix.gguf", "F32")
    assert identify(tmp_path).path == tmp_path / "model.gguf"
    other = tmp_path / "other"
    write_gguf(other / "model-f16.gguf", "F16")  # what convert_hf_to_gguf writes first
    write_gguf(other / "model-Q8_0.gguf", "Q8_0")
    assert identify(other).path == other / "model-Q8_0.gguf"
    write_gguf(other / "model-Q4_K_M.gguf", "Q4_K_M")
    with pytest.raises(InputError, match="not exactly one model .gguf"):
        identify(other)


def test_variant_size_is_its_weight_files(tmp_path):
    folder = checkpoint(tmp_path / "m", ct(W4))
    (folder / "model.safetensors").rename(folder / "model-00001-of-00002.safetensors")
    (folder / "model-00001-of-00002.safetensors").write_bytes(b"x" * 1000)
    (folder / "model-00002-of-00002.safetensors").write_bytes(b"x" * 234)
    (folder / "tokenizer.json").write_text("{}")
    info = inspect_variant(folder)
    assert (info.format, info.weights_bytes, len(info.files)) == ("w4a16", 1234, 2)


def test_bad_artifacts_are_refused_with_a_fix(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        identify(tmp_path / "missing")
    with pytest.raises(InputError, match="no config.json and not exactly one"):
        identify(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(InputError, match="no weight files"):
        identify(tmp_path)
    (tmp_path / "broken.gguf").write_bytes(b"GGUF\x03\x00")
    with pytest.raises(InputError, match="not a readable GGUF file"):
        identify(tmp_path / "broken.gguf")
