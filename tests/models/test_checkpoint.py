"""Model intake refuses broken checkpoints with one line naming the file and the fix."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from quantship.errors import InputError
from quantship.models.checkpoint import inspect_checkpoint


def test_good_checkpoint_is_described_from_headers(tiny_checkpoint):
    from transformers import AutoModelForCausalLM

    info = inspect_checkpoint(tiny_checkpoint)
    model = AutoModelForCausalLM.from_pretrained(tiny_checkpoint)
    assert info.parameters == sum(p.numel() for p in model.parameters())
    assert info.dtypes == {"BF16": info.parameters}
    assert info.architecture == "LlamaForCausalLM"
    assert info.weight_format == "safetensors" and info.weight_files == ["model.safetensors"]
    assert info.chat_template and info.warnings == []
    assert info.disk_bytes > (tiny_checkpoint / "model.safetensors").stat().st_size


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])


def _corrupt_header(path):
    data = bytearray(path.read_bytes())
    data[8:20] = b"not json at!"
    path.write_bytes(bytes(data))


def _huge_header(path):
    data = bytearray(path.read_bytes())
    data[:8] = (1 << 40).to_bytes(8, "little")
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "damage, message",
    [
        (_truncate, r"model.safetensors is truncated.*re-download"),
        (_corrupt_header, r"model.safetensors has a corrupt safetensors header \(not JSON\)"),
        (_huge_header, r"model.safetensors has a corrupt safetensors header \(declared length"),
    ],
)
def test_damaged_shard_is_refused(tiny_checkpoint, damage, message):
    damage(tiny_checkpoint / "model.safetensors")
    with pytest.raises(InputError, match=message):
        inspect_checkpoint(tiny_checkpoint)


def test_missing_tokenizer(tiny_checkpoint):
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (tiny_checkpoint / name).unlink()
    with pytest.raises(InputError, match="has no tokenizer.*copy the tokenizer files"):
        inspect_checkpoint(tiny_checkpoint)


def test_wrong_path(tmp_path):
    with pytest.raises(InputError, match="does not exist.*demo-model"):
        inspect_checkpoint(tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="is a file"):
        inspect_checkpoint(tmp_path / "file")


def test_pickle_checkpoint_needs_the_flag(tiny_checkpoint):
    (tiny_checkpoint / "model.safetensors").unlink()
    torch.save({"w": torch.zeros(2)}, tiny_checkpoint / "pytorch_model.bin")
    with pytest.raises(InputError, match=r"pytorch_model.bin is a pickle checkpoint.*--allow-pickle"):
        inspect_checkpoint(tiny_checkpoint)
    info = inspect_checkpoint(tiny_checkpoint, allow_pickle=True)
    assert info.weight_format == "pickle" and info.parameters is None


def test_missing_shard_listed_in_index(tiny_checkpoint):
    shutil.move(tiny_checkpoint / "model.safetensors", tiny_checkpoint / "model-00001-of-00002.safetensors")
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    (tiny_checkpoint / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(InputError, match="model-00002-of-00002.safetensors listed in .* is missing"):
        inspect_checkpoint(tiny_checkpoint)


def test_unknown_architecture_and_bad_config(tiny_checkpoint):
    config = json.loads((tiny_checkpoint / "config.json").read_text())
    (tiny_checkpoint / "config.json").write_text(json.dumps({**config, "architectures": ["LlamaForSequenceClassification"]}))
    with pytest.raises(InputError, match="name no causal language model"):
        inspect_checkpoint(tiny_checkpoint)
    (tiny_checkpoint / "config.json").write_text(json.dumps({**config, "model_type": "no-such-model"}))
    with pytest.raises(InputError, match="model_type 'no-such-model' is unknown"):
        inspect_checkpoint(tiny_checkpoint)
    (tiny_checkpoint / "config.json").write_text("{")
    with pytest.raises(InputError, match="config.json is not valid JSON"):
        inspect_checkpoint(tiny_checkpoint)


def test_missing_chat_template_is_a_warning(tmp_path):
    from tests.support.tiny_model import build_tiny_checkpoint

    info = inspect_checkpoint(build_tiny_checkpoint(tmp_path / "base", chat_template=False))
    assert not info.chat_template
    assert "no chat template" in info.warnings[0]
