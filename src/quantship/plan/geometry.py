"""Model geometry from `config.json`: what the memory budget is computed from.

Reads the fields every Llama-family config carries (Llama, Mistral, Qwen2/Qwen3) and
estimates the parameter count from them when no weight files are at hand. A
checkpoint folder's safetensors headers give the exact count instead (no tensor is
loaded). MoE models are read, but their parameter count is not estimated from the
config: the expert layout differs per family, and a wrong guess would mis-size every
replica.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, computed_field

from quantship.errors import InputError

LLAMA_FAMILY = {"llama", "mistral", "qwen2", "qwen3"}
MOE_KEYS = ("num_local_experts", "num_experts", "n_routed_experts", "moe_intermediate_size")
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}


class ParamCount(BaseModel):
    """Parameters split by whether weight quantization touches them."""

    linear: int       # attention and MLP projection weights: what GPTQ/FP8/INT8 quantize
    other: int        # embeddings, lm_head, norms, biases: kept in 16-bit by llm-compressor
    source: str       # "safetensors headers" or "estimated from config.json"

    @computed_field
    @property
    def total(self) -> int:
        return self.linear + self.other


class ModelGeometry(BaseModel):
    """The shape of a decoder-only transformer, as the memory budget needs it."""

    name: str
    model_type: str
    architecture: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tie_word_embeddings: bool
    max_position_embeddings: int
    dtype: str
    qkv_bias: bool = False
    qk_norm: bool = False
    experts: int | None = None

    @property
    def is_moe(self) -> bool:
        return self.experts is not None

    @property
    def dtype_bytes(self) -> int:
        return DTYPE_BYTES.get(self.dtype, 2)


def load_config(path: Path) -> tuple[dict, Path]:
    """The config dict and the folder it came from (a folder or the file itself)."""
    path = Path(path)
    file = path / "config.json" if path.is_dir() else path
    if not file.exists():
        raise InputError(
            f"{file} does not exist",
            "pass --model a Hugging Face checkpoint folder or its config.json",
        )
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"{file} is not valid JSON ({error})", "pass the model's config.json") from error
    if not isinstance(config, dict):
        raise InputError(f"{file} is not a model config object", "pass the model's config.json")
    return config, file.parent


def geometry_from_config(config: dict, name: str = "model") -> ModelGeometry:
    """Read the geometry; multimodal configs contribute their `text_config`."""
    text = config.get("text_config") or config
    missing = [k for k in ("num_hidden_layers", "hidden_size", "num_attention_heads", "vocab_size") if k not in text]
    if missing:
        raise InputError(
            f"config.json of {name} lacks {', '.join(missing)}",
            "quantship plans decoder-only transformers with a Hugging Face config (Llama, Mistral, Qwen2/3)",
        )
    heads = int(text["num_attention_heads"])
    hidden = int(text["hidden_size"])
    head_dim = text.get("head_dim") or hidden // heads
    model_type = str(text.get("model_type") or config.get("model_type") or "unknown")
    experts = next((int(text[k]) for k in MOE_KEYS[:3] if text.get(k)), None)
    if experts is None and text.get("moe_intermediate_size"):
        experts = 0  # MoE family without an expert count we recognise
    return ModelGeometry(
        name=name,
        model_type=model_type,
        architecture=(config.get("architectures") or [model_type])[0],
        layers=int(text["num_hidden_layers"]),
        hidden=hidden,
        heads=heads,
        kv_heads=int(text.get("num_key_value_heads") or heads),
        head_dim=int(head_dim),
        intermediate=int(text.get("intermediate_size") or 4 * hidden),
        vocab=int(text["vocab_size"]),
        tie_word_embeddings=bool(config.get("tie_word_embeddings", text.get("tie_word_embeddings", False))),
        max_position_embeddings=int(text.get("max_position_embeddings") or 0),
        dtype=str(text.get("torch_dtype") or text.get("dtype") or config.get("torch_dtype") or "bfloat16"),
        qkv_bias=bool(text.get("attention_bias", model_type == "qwen2")),
        qk_norm=model_type == "qwen3",
        experts=experts,
    )


def estimate_params(geo: ModelGeometry) -> ParamCount:
    """Parameter count of a dense Llama-layout model from its geometry alone."""
    if geo.is_moe:
        raise InputError(
            f"{geo.name} is a mixture-of-experts model ({geo.model_type}); "
            "its size cannot be estimated from config.json",
            "pass --model the checkpoint folder (safetensors) or --variant a quantized folder so real sizes are used",
        )
    q = geo.heads * geo.head_dim
    kv = geo.kv_heads * geo.head_dim
    attention = geo.hidden * q + 2 * geo.hidden * kv + q * geo.hidden
    mlp = 3 * geo.hidden * geo.intermediate
    per_layer_other = 2 * geo.hidden
    if geo.qkv_bias:
        per_layer_other += q + 2 * kv
    if geo.qk_norm:
        per_layer_other += 2 * geo.head_dim
    embeddings = geo.vocab * geo.hidden * (1 if geo.tie_word_embeddings else 2)
    return ParamCount(
        linear=geo.layers * (attention + mlp),
        other=geo.layers * per_layer_other + embeddings + geo.hidden,
        source="estimated from config.json",
    )


def params_from_safetensors(folder: Path) -> ParamCount | None:
    """Exact parameter count from safetensors headers, or None without such files."""
    from safetensors import safe_open

    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        return None
    linear = other = 0
    for file in files:
        with safe_open(str(file), framework="numpy") as handle:
            for key in handle.keys():
                shape = handle.get_slice(key).get_shape()
                count = 1
                for dim in shape:
                    count *= dim
                if _is_linear(key, shape):
                    linear += count
                else:
                    other += count
    return ParamCount(linear=linear, other=other, source="safetensors headers")


def _is_linear(key: str, shape: list[int]) -> bool:
    return len(shape) == 2 and "embed" not in key and "lm_head" not in key
