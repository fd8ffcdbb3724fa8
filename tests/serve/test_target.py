"""What serve reads from a checkpoint or variant: format, plan format, vLLM quantization."""

from __future__ import annotations

import pytest

from quantship.errors import InputError
from quantship.serve.target import from_model_path, from_variant, plan_format
from tests.support.serve_files import W4A16, W8A8_INT8, make_variant, write_checkpoint


def test_plain_checkpoint_is_bf16_control(tmp_path):
    target = from_model_path(write_checkpoint(tmp_path / "SmolLM2"))
    assert (target.format, target.name, target.variant) == ("bf16", "SmolLM2", None)
    assert target.vllm_quantization is None and plan_format(target) == "bf16"


@pytest.mark.parametrize(("quant", "expected"), [(W4A16, "w4a16"), (W8A8_INT8, "w8a8-int8")])
def test_compressed_tensors_scheme_is_read_from_config(tmp_path, quant, expected):
    target = from_model_path(write_checkpoint(tmp_path / "m", quant))
    assert target.format == "compressed-tensors"
    assert target.vllm_quantization == "compressed-tensors"
    assert plan_format(target) == expected


def test_gguf_file_and_folder_holding_one(tmp_path):
    file = tmp_path / "g" / "model.Q4_K_M.gguf"
    file.parent.mkdir()
    file.write_bytes(b"GGUF")
    for given in (file, file.parent):
        target = from_model_path(given)
        assert target.path == file and target.format == "gguf"
        assert plan_format(target) == "gguf-q4_k_m"


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
    assert (target.name, target.variant, target.format, target.gguf_type) == ("q4km", "q4km", "gguf", "Q4_K_M")
    assert target.manifest["outputs"]


def test_variant_whose_manifest_contradicts_its_files_is_refused(run_dir):
    make_variant(run_dir, "w4", quant=W4A16, fmt="gguf")
    with pytest.raises(InputError, match="manifest says format 'gguf'"):
        from_variant(run_dir, "w4")


def test_missing_variant_names_the_stage_to_run(run_dir):
    with pytest.raises(InputError, match="quantship quantize"):
        from_variant(run_dir, "ghost")


def test_invalid_config_json_is_an_input_error(tmp_path):
    folder = write_checkpoint(tmp_path / "m")
    (folder / "config.json").write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        from_model_path(folder)


def test_gguf_variant_folder_with_imatrix_serves_model_gguf(tmp_path):
    folder = tmp_path / "q4"
    folder.mkdir()
    (folder / "model.gguf").write_bytes(b"GGUF")
    (folder / "imatrix.gguf").write_bytes(b"GGUF")
    assert from_model_path(folder).path == folder / "model.gguf"
    (folder / "model.gguf").rename(folder / "SmolLM2.Q4_K_M.gguf")
    assert from_model_path(folder).path == folder / "SmolLM2.Q4_K_M.gguf"


def test_gguf_type_is_read_from_the_file_header_when_the_name_does_not_say(tmp_path):
    from quantship.models.demo import locate_demo_gguf

    (tmp_path / "model.gguf").symlink_to(locate_demo_gguf())
    target = from_model_path(tmp_path / "model.gguf")
    assert target.gguf_type == "Q4_1" and plan_format(target) is None  # Q4_1: not in plan's matrix
