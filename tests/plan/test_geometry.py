"""Parameter counts and geometry against the published sizes of real models."""

from __future__ import annotations

import numpy as np
import pytest
from safetensors.numpy import save_file

from quantship.errors import InputError
from quantship.plan.geometry import estimate_params, geometry_from_config, load_config, params_from_safetensors


@pytest.mark.parametrize(
    ("model", "published"),
    [
        ("llama2_13b", 13_015_864_320),
        ("llama3_8b", 8_030_261_248),
        ("llama3_70b", 70_553_706_496),
        ("smollm2", 134_515_008),
        ("qwen2_0_5b", 494_032_768),  # qkv bias and tied embeddings
    ],
)
def test_parameter_estimate_matches_published_count(configs, model, published):
    assert estimate_params(geometry_from_config(configs[model])).total == published


def test_gqa_and_head_dim_are_read(smollm2, llama3_8b):
    assert (smollm2.heads, smollm2.kv_heads, smollm2.head_dim) == (9, 3, 64)
    assert (llama3_8b.kv_heads, llama3_8b.head_dim) == (8, 128)
    assert smollm2.tie_word_embeddings and not llama3_8b.tie_word_embeddings


def test_missing_kv_heads_means_multi_head_attention(configs):
    config = {k: v for k, v in configs["llama2_13b"].items() if k != "num_key_value_heads"}
    assert geometry_from_config(config).kv_heads == 40


def test_multimodal_config_uses_its_text_config(configs):
    text = configs["llama3_8b"]
    geo = geometry_from_config({"architectures": ["LlavaForConditionalGeneration"], "text_config": text})
    assert geo.layers == 32 and geo.kv_heads == 8


def test_moe_estimate_is_refused_with_the_fix(configs):
    mixtral = {**configs["llama3_8b"], "model_type": "mixtral", "num_local_experts": 8}
    geo = geometry_from_config(mixtral, "mixtral")
    assert geo.is_moe
    with pytest.raises(InputError, match="mixture-of-experts.*--variant"):
        estimate_params(geo)


def test_config_without_transformer_fields_is_a_one_line_error(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    config, _ = load_config(tmp_path)
    with pytest.raises(InputError, match="lacks num_hidden_layers"):
        geometry_from_config(config)


def test_missing_and_corrupt_config(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_config(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        load_config(tmp_path)


def test_safetensors_headers_give_exact_split(tmp_path):
    tensors = {
        "model.embed_tokens.weight": np.zeros((10, 4), dtype=np.float16),
        "model.layers.0.self_attn.q_proj.weight": np.zeros((4, 4), dtype=np.float16),
        "model.layers.0.mlp.down_proj.weight": np.zeros((4, 6), dtype=np.float16),
        "model.layers.0.input_layernorm.weight": np.zeros((4,), dtype=np.float16),
        "lm_head.weight": np.zeros((10, 4), dtype=np.float16),
    }
    save_file(tensors, str(tmp_path / "model.safetensors"))
    params = params_from_safetensors(tmp_path)
    assert (params.linear, params.other) == (16 + 24, 40 + 4 + 40)
    assert params_from_safetensors(tmp_path / "nothing-here") is None
