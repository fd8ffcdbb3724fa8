"""The tensor types an llm-compressor variant can give one Linear layer, for per-tensor allocation.

One place for their spelling (`LayerOverride.type` on llm-compressor variants):

- `W4A16-g<N>`: int4 weights, symmetric, one scale per N input columns (N divides them)
- `W8A16`: int8 weights, symmetric, one scale per output channel
- `bf16`: not quantized

For each type: the bits per weight the written compressed-tensors checkpoint spends on
it, and the round-to-nearest weight llm-compressor's RTN would produce (computed with
compressed-tensors' own qparam and fake-quantize functions), so an allocator can rank
choices without running llm-compressor for each. GPTQ lands below RTN's error.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from quantship.errors import InputError

if TYPE_CHECKING:
    import torch
    from compressed_tensors.quantization import QuantizationArgs

# Linear layers vLLM loads as one fused layer (the packed_modules_mapping of Llama-family models):
# one fused layer has one scheme, so its shards need one type
FUSED_SHARDS = {"qkv_proj": ("q_proj", "k_proj", "v_proj"), "gate_up_proj": ("gate_proj", "up_proj")}
CANDIDATE_GROUP_SIZES = (32, 64, 128)  # the group sizes vLLM's WNA16 kernels (Marlin, Machete) accept
BF16 = "bf16"
W8A16 = "W8A16"
SPELLINGS = "W4A16-g32, W4A16-g64, W4A16-g128 (any W4A16-g<N>), W8A16 or bf16"
_W4A16 = re.compile(r"W4A16-G([1-9][0-9]*)")


@dataclass(frozen=True)
class LlmcType:
    """One parsed type: `bits` 4 or 8 (16: unquantized); `group_size` None for per-channel or bf16."""

    name: str  # canonical spelling
    bits: int
    group_size: int | None

    @property
    def quantized(self) -> bool:
        return self.bits < 16

    def fits(self, in_features: int) -> bool:
        """compressed-tensors' grouped kernels need the group size to divide the input columns."""
        return self.group_size is None or in_features % self.group_size == 0


def w4a16(group_size: int) -> str:
    return f"W4A16-g{group_size}"


def parse_type(type_: str) -> LlmcType:
    """The type named by `type_` (case-insensitive); anything else is an InputError naming the spellings."""
    key = type_.strip().upper()
    if key == BF16.upper():
        return LlmcType(BF16, 16, None)
    if key == W8A16:
        return LlmcType(W8A16, 8, None)
    found = _W4A16.fullmatch(key)
    if found:
        size = int(found.group(1))
        return LlmcType(w4a16(size), 4, size)
    hint = " (name its group size, e.g. W4A16-g128)" if key == "W4A16" else ""
    raise InputError(f"{type_!r} is not an llm-compressor tensor type{hint}", f"use {SPELLINGS}")


def fused_name(module: str) -> str | None:
    """The fused layer vLLM builds from this module ("...self_attn.q_proj" -> "...self_attn.qkv_proj"), or None."""
    parent, _, leaf = module.rpartition(".")
    for fused, shards in FUSED_SHARDS.items():
        if leaf in shards:
            return f"{parent}.{fused}" if parent else fused
    return None


def candidate_types(in_features: int) -> list[str]:
    """Every type a layer with `in_features` input columns can take, smallest group first."""
    return [w4a16(g) for g in CANDIDATE_GROUP_SIZES if in_features % g == 0] + [W8A16, BF16]


def bits_per_weight(type_: str, in_features: int, dtype_bits: int = 16) -> float:
    """Stored bits per weight of one layer as compressed-tensors writes it.

    Codes are packed densely into int32 along the input columns (ceil(in * bits / 32)
    int32s per row); each group (or output channel, W8A16) adds one scale stored in the
    weight's dtype (`dtype_bits`: 16 for bf16/fp16 checkpoints); symmetric types store no
    zero point. Unquantized layers keep `dtype_bits`. The per-layer `weight_shape`
    (two int64) is not counted, as the backend's quantized-layer measurement leaves it out.
    """
    kind = parse_type(type_)
    if not kind.quantized:
        return float(dtype_bits)
    if not kind.fits(in_features):
        raise InputError(
            f"{kind.name} does not fit a layer with {in_features} input columns (group size {kind.group_size} does not divide it)",
            f"use one of {', '.join(candidate_types(in_features))}",
        )
    codes = math.ceil(in_features * kind.bits / 32) * 32
    scales = in_features // kind.group_size if kind.group_size else 1
    return (codes + scales * dtype_bits) / in_features


def weight_args(type_: str) -> QuantizationArgs:
    """compressed-tensors' QuantizationArgs for a quantized type: what the recipe and fake_quantize use."""
    from compressed_tensors.quantization import QuantizationArgs

    kind = parse_type(type_)
    if not kind.quantized:
        raise ValueError(f"{kind.name} is not quantized: it has no QuantizationArgs")
    return QuantizationArgs(
        num_bits=kind.bits,
        type="int",
        symmetric=True,
        group_size=kind.group_size,
        strategy="group" if kind.group_size else "channel",
    )


def fake_quantize(weight: torch.Tensor, type_: str) -> torch.Tensor:
    """`weight` ([out, in]) rounded to the type's grid and dequantized, in its own dtype.

    The min/max of each group (or row) give the scale through compressed-tensors'
    calculate_qparams, and its fake_quantize rounds: the arithmetic of llm-compressor's
    RTN (QuantizationModifier, memoryless min-max weight observer).
    """
    from compressed_tensors.quantization.lifecycle.forward import fake_quantize as ct_fake_quantize
    from compressed_tensors.quantization.utils import calculate_qparams

    kind = parse_type(type_)
    if not kind.quantized:
        return weight.clone()
    if weight.ndim != 2:
        raise ValueError(f"fake_quantize takes a Linear weight [out, in], got shape {tuple(weight.shape)}")
    if not kind.fits(weight.shape[1]):
        raise InputError(
            f"{kind.name} does not fit a weight with {weight.shape[1]} input columns",
            f"use one of {', '.join(candidate_types(weight.shape[1]))}",
        )
    args = weight_args(kind.name)
    # observed values per scale: [out, groups, group_size] (per channel: one group of all columns)
    observed = weight.unflatten(-1, (-1, kind.group_size)) if kind.group_size else weight.unsqueeze(1)
    scale, zero_point = calculate_qparams(observed.amin(-1), observed.amax(-1), args)
    return ct_fake_quantize(weight, scale, zero_point, args)
