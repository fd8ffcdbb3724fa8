"""Per-block sensitivity: how much KL divergence each decoder block's quantization causes alone.

The baseline model runs with exactly one block's Linear weights replaced by the
variant's dequantized weights; the full-vocabulary KL against the untouched baseline
on the same tokens is that block's score. One forward pass per block, no
requantization, and the ranking is in the unit the gate measures. compressed-tensors
variants only: their dequantized weights come from transformers' own decompression.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from quantship.errors import InputError
from quantship.models.loading import DTYPES, load_causal_lm

_BLOCK = re.compile(r"^(model\.layers\.\d+)\.")


def _linear_weights(model) -> dict[str, torch.Tensor]:
    return {f"{n}.weight": m.weight for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}


def _dequantized_variant(folder: Path, dtype: str):
    from transformers import AutoModelForCausalLM, CompressedTensorsConfig

    return AutoModelForCausalLM.from_pretrained(
        str(folder), dtype=DTYPES[dtype], quantization_config=CompressedTensorsConfig(dequantize=True)
    ).eval()


def block_sensitivity(
    checkpoint: Path, variant_folder: Path, manifest: dict[str, Any], input_ids: torch.Tensor, dtype: str,
    on_block: Callable[[int], None] | None = None,
) -> list[dict[str, Any]]:
    """[{"layer": "model.layers.N", "pattern": regex, "score": mean KL}], most sensitive first."""
    if manifest.get("format") != "compressed-tensors":
        raise InputError(
            f"sensitivity needs a compressed-tensors variant, not {manifest.get('format')}",
            "rank layers on an llm-compressor variant of the same scheme",
        )
    base = load_causal_lm(checkpoint, dtype, "cpu")
    quant = _dequantized_variant(variant_folder, dtype)
    base_w = _linear_weights(base)
    quant_w = {n: w.detach().to(base_w[n].dtype) for n, w in _linear_weights(quant).items() if n in base_w}
    del quant
    blocks: dict[str, list[str]] = {}
    for name in base_w:
        match = _BLOCK.match(name)
        if match and name in quant_w and not torch.equal(base_w[name], quant_w[name]):
            blocks.setdefault(match.group(1), []).append(name)
    with torch.inference_mode():
        ref = torch.log_softmax(base(input_ids=input_ids, use_cache=False).logits.float(), -1)
        scores = []
        for block, names in blocks.items():
            saved = {n: base_w[n].data.clone() for n in names}
            for n in names:
                base_w[n].data.copy_(quant_w[n])
            logp = torch.log_softmax(base(input_ids=input_ids, use_cache=False).logits.float(), -1)
            for n in names:
                base_w[n].data.copy_(saved[n])
            kl = (ref.exp() * (ref - logp)).sum(-1).mean()
            scores.append({"layer": block, "pattern": re.escape(block) + r"\.", "score": float(kl), "modules": len(names)})
            if on_block is not None:
                on_block(1)
    return sorted(scores, key=lambda s: -s["score"])
