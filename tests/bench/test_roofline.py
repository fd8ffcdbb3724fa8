"""Bytes of weights read per decoded token, from safetensors and GGUF headers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType, GGUFWriter
from safetensors.torch import save_file

from quantship.bench.roofline import decode_bound, read_bandwidth, weight_bytes_per_token


def test_tied_head_reads_the_embedding_table(tmp_path):
    save_file(
        {
            "model.embed_tokens.weight": torch.zeros(100, 8, dtype=torch.bfloat16),
            "model.layers.0.mlp.up_proj.weight": torch.zeros(16, 8, dtype=torch.bfloat16),
        },
        str(tmp_path / "model.safetensors"),
    )
    assert weight_bytes_per_token(tmp_path) == (100 * 8 + 16 * 8) * 2


def test_untied_embedding_is_read_one_row_at_a_time(tmp_path):
    save_file(
        {"model.embed_tokens.weight": torch.zeros(100, 8), "lm_head.weight": torch.zeros(100, 8)},
        str(tmp_path / "model-00001-of-00002.safetensors"),
    )
    save_file(
        {"model.layers.0.mlp.up_proj.weight": torch.zeros(16, 8)}, str(tmp_path / "model-00002-of-00002.safetensors")
    )
    assert weight_bytes_per_token(tmp_path) == (100 * 8 + 16 * 8) * 4


def test_gguf_counts_quantized_bytes(tmp_path):
    path = tmp_path / "m.gguf"
    writer = GGUFWriter(str(path), "llama")
    writer.add_tensor("token_embd.weight", np.zeros((64, 32), dtype=np.float16))
    # Q8_0: blocks of 32 values stored in 34 bytes, written as raw bytes.
    writer.add_tensor("blk.0.ffn_up.weight", np.zeros((4, 2 * 34), dtype=np.uint8), raw_dtype=GGMLQuantizationType.Q8_0)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    assert weight_bytes_per_token(path) == 64 * 32 * 2 + 4 * 2 * 34


def test_bound_and_bandwidth_probe_shape(tmp_path):
    assert decode_bound(10e9, 250_000_000) == pytest.approx(40.0)
    probe = read_bandwidth(size_bytes=8 << 20, repeats=2)
    assert probe["torch_sum_bytes_per_s"] > 0 and probe["numpy_sum_1thread_bytes_per_s"] > 0
    with pytest.raises(ValueError, match="no weights"):
        weight_bytes_per_token(tmp_path)
