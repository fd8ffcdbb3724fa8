"""Per-block sensitivity: how much KL divergence each decoder block's quantization causes alone.

The baseline model runs with exactly one block's Linear weights replaced by the
variant's dequantized weights; the full-vocabulary KL against the untouched baseline
on the same tokens is that block's score. One forward pass per block, no
requantization, and the ranking is in the unit the gate measures.

The ranking only needs "the variant's dequantized weights by Hugging Face name", which
`variant_weights` gets from either format: compressed-tensors through transformers' own
decompression, GGUF through the `gguf` package's dequantizers (names mapped back with
the package's tensor-name map, llama.cpp's q/k row permutation undone). Scores leave out
what the runtime does beyond the weights (llama.cpp's 8-bit activations in its dot
products), so they rank weight error, not the runtime's exact output.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from quantship.errors import InputError
from quantship.formats.identify import Artifact
from quantship.models.demo import unpermute_rope
from quantship.models.loading import DTYPES, load_causal_lm
from quantship.quantize.gguf_names import checkpoint_weight_names, hf_to_gguf_names

_BLOCK = re.compile(r"^(model\.layers\.\d+)\.")
# Above this relative error a "dequantized" weight is not the baseline's weight at all:
# the name or row-layout map is wrong (a 2-bit grid stays well below it; a wrong row
# permutation of an otherwise exact matrix gives about sqrt(2)).
_MISMATCH = 1.0
# llama.cpp's converter permutes q/k rows for these architectures (LlamaModel.permute).
_ROPE_PERMUTED = {"llama"}


def _linear_weights(model) -> dict[str, torch.Tensor]:
    return {f"{n}.weight": m.weight for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}


def variant_weights(checkpoint: Path, artifact: Artifact, dtype: str) -> dict[str, torch.Tensor]:
    """The variant's dequantized decoder-block weights by Hugging Face parameter name."""
    if artifact.quant_method == "compressed-tensors":
        return _compressed_tensors_weights(artifact.folder, dtype)
    if artifact.container == "gguf":
        return gguf_block_weights(artifact.path, checkpoint)
    raise InputError(
        f"sensitivity needs a compressed-tensors or GGUF variant, not {artifact.label}",
        "rank layers on an llm-compressor or GGUF variant of the same scheme",
    )


def _compressed_tensors_weights(folder: Path, dtype: str) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForCausalLM, CompressedTensorsConfig

    model = AutoModelForCausalLM.from_pretrained(
        str(folder), dtype=DTYPES[dtype], quantization_config=CompressedTensorsConfig(dequantize=True)
    ).eval()
    return {n: w.detach() for n, w in _linear_weights(model).items() if _BLOCK.match(n)}


def gguf_block_weights(path: Path, checkpoint: Path) -> dict[str, torch.Tensor]:
    """Every decoder-block matrix of a GGUF file, dequantized to float32, by HF name.

    Only block tensors are dequantized: token_embd (tied or not) and the output head
    are outside every block and never part of the ranking.
    """
    from gguf import GGUFReader
    from gguf.quants import dequantize

    reader = GGUFReader(str(path))
    arch = _field(reader, "general.architecture")
    blocks = int(_field(reader, f"{arch}.block_count") or 0)
    to_gguf = hf_to_gguf_names(checkpoint_weight_names(checkpoint), arch, blocks)
    to_hf = {tensor: f"{module}.weight" for module, tensor in to_gguf.items() if _BLOCK.match(module)}
    heads = {"q_proj": _field(reader, f"{arch}.attention.head_count"), "k_proj": _field(reader, f"{arch}.attention.head_count_kv")}
    weights = {}
    for tensor in reader.tensors:
        name = to_hf.get(tensor.name)
        if name is None or len(tensor.shape) < 2:  # norms are vectors, not Linear weights
            continue
        values = dequantize(tensor.data, tensor.tensor_type).reshape(tuple(int(d) for d in reversed(tensor.shape)))
        kind = name.rsplit(".", 2)[-2]
        if arch in _ROPE_PERMUTED and kind in heads and heads[kind]:
            values = unpermute_rope(values, int(heads[kind]))
        weights[name] = torch.from_numpy(np.array(values, dtype=np.float32))
    if not weights:
        raise InputError(
            f"{path.name}: no decoder-block tensor maps to a weight of {checkpoint}",
            "quantize the variant from this run's baseline",
        )
    return weights


def _field(reader, key: str):
    field = reader.fields.get(key)
    return field.contents() if field is not None else None


def block_sensitivity(
    checkpoint: Path, quant_weights: dict[str, torch.Tensor], input_ids: torch.Tensor, dtype: str,
    on_block: Callable[[int], None] | None = None,
) -> list[dict[str, Any]]:
    """[{"layer": "model.layers.N", "pattern": regex, "score": mean KL, ...}], most sensitive first.

    `quant_weights`: dequantized variant weights by HF parameter name (`variant_weights`).
    """
    base = load_causal_lm(checkpoint, dtype, "cpu")
    base_w = _linear_weights(base)
    blocks: dict[str, list[str]] = {}
    errors: dict[str, list[float]] = {}
    cast: dict[str, torch.Tensor] = {}
    for name, weight in quant_weights.items():
        match = _BLOCK.match(name)
        if not match or name not in base_w:
            continue
        if tuple(weight.shape) != tuple(base_w[name].shape):
            raise InputError(f"variant weight {name} has shape {tuple(weight.shape)}, the baseline's {tuple(base_w[name].shape)}",
                             "rank a variant quantized from this run's baseline")
        cast[name] = weight = weight.to(base_w[name].dtype)
        if torch.equal(base_w[name], weight):
            continue
        error = float((weight - base_w[name].detach()).norm() / base_w[name].detach().norm().clamp_min(1e-12))
        if error > _MISMATCH:
            raise InputError(f"dequantized {name} does not match the baseline's weight (relative error {error:.2f})",
                             "the variant's tensor names or layout do not map onto this checkpoint; rank another variant")
        blocks.setdefault(match.group(1), []).append(name)
        errors.setdefault(match.group(1), []).append(error)
    with torch.inference_mode():
        ref = torch.log_softmax(base(input_ids=input_ids, use_cache=False).logits.float(), -1)
        scores = []
        for block, names in blocks.items():
            saved = {n: base_w[n].data.clone() for n in names}
            for n in names:
                base_w[n].data.copy_(cast[n])
            logp = torch.log_softmax(base(input_ids=input_ids, use_cache=False).logits.float(), -1)
            for n in names:
                base_w[n].data.copy_(saved[n])
            kl = (ref.exp() * (ref - logp)).sum(-1).mean()
            scores.append({
                "layer": block, "pattern": re.escape(block) + r"\.", "score": float(kl), "modules": len(names),
                "weight_relative_error": sum(errors[block]) / len(errors[block]),
            })
            if on_block is not None:
                on_block(1)
    return sorted(scores, key=lambda s: -s["score"])
