"""What serve reads from a checkpoint or variant: the artifact, its served name, its manifest."""

from __future__ import annotations

import pytest

from quantship.errors import InputError
from quantship.serve.target import from_model_path, from_variant
from tests.support.serve_files import W4A16, W8A8_INT8, make_variant, write_checkpoint, write_gguf


def test_plain_checkpoint_is_bf16_control(tmp_path):
    target = from_model_path(write_checkpoint(tmp_path / "SmolLM2"))
    assert (target.artifact.format, target.name, target.variant) == ("bf16", "SmolLM2", None)
    assert target.artifact.vllm_quantization is None


@pytest.mark.parametrize(("quant", "expected"), [(W4A16, "w4a16"), (W8A8_INT8, "w8a8-int8")])
def test_compressed_tensors_scheme_is_read_from_config(tmp_path, quant, expected):
    target = from_model_path(write_checkpoint(tmp_path / "m", quant))
    assert target.artifact.quant_method == "compressed-tensors" == target.artifact.vllm_quantization
    assert target.artifact.format == expected


def test_gguf_file_and_folder_holding_one_are_served_by_file_stem(tmp_path):
    file = write_gguf(tmp_path / "g" / "model.Q4_K_M.gguf")
    for given in (file, file.parent):
        target = from_model_path(given)
        assert target.path == file and target.name == "model.Q4_K_M"
        assert (target.artifact.container, target.artifact.format) == ("gguf", "gguf-q4_k_m")


def test_bad_model_paths_are_refused_with_a_fix(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        from_model_path(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no config.json"):
        from_model_path(tmp_path / "empty")
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(InputError, match="neither a .gguf"):
        from_model_path(tmp_path / "weights.bin")


def test_variant_reads_manifest_and_is_named_after_the_variant(run_dir):
    make_variant(run_dir, "q4km", gguf=True)
    target = from_variant(run_dir, "q4km")
    assert (target.name, target.variant, target.artifact.gguf_type) == ("q4km", "q4km", "Q4_K_M")
    assert target.manifest["outputs"] and target.manifest["artifact"] == target.artifact.as_record()


def test_variant_whose_manifest_contradicts_its_files_is_refused(run_dir):
    gguf_record = {"container": "gguf", "quant_method": "gguf", "gguf_type": "Q4_K_M", "format": "gguf-q4_k_m"}
    make_variant(run_dir, "w4", quant=W4A16, recorded=gguf_record)
    with pytest.raises(InputError, match="its manifest records .*'gguf'.* but the files are .*compressed-tensors"):
        from_variant(run_dir, "w4")


def test_missing_variant_names_the_stage_to_run(run_dir):
    with pytest.raises(InputError, match="quantship quantize"):
        from_variant(run_dir, "ghost")


def test_invalid_config_json_is_an_input_error(tmp_path):
    folder = write_checkpoint(tmp_path / "m")
    (folder / "config.json").write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        from_model_path(folder)
