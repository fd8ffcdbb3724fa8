"""llm-compressor candidates: W4A16 at every dividing group size, W8A16, bf16, for every decoder Linear.

The weights are compressed-tensors' own round-to-nearest (quantize/llmc_candidates.py);
the build runs GPTQ, which lands below RTN's error, and the gate-run correction absorbs
that. q/k/v and gate/up are grouped: vLLM fuses each into one layer with one scheme.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from safetensors import safe_open

from quantship.allocate.candidates import CandidateSet, TensorChoices
from quantship.errors import InputError
from quantship.quantize.llmc_candidates import BF16, bits_per_weight, candidate_types, fake_quantize, fused_name, parse_type

_BLOCK_LINEAR = re.compile(r"^model\.layers\.\d+\.(self_attn|mlp)\.\w+_proj\.weight$")
_DTYPE_BITS = {"BF16": 16, "F16": 16, "F32": 32}
_SHAPE_BITS = 2 * 64  # the weight_shape tensor (two int64) compressed-tensors stores beside each quantized layer


def llmc_candidates(checkpoint: Path, types: list[str] | None) -> CandidateSet:
    wanted = None if types is None else {parse_type(t).name for t in types} | {BF16}
    shapes, dtype_bits = {}, {}
    for file in sorted(Path(checkpoint).glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as handle:
            for key in handle.keys():
                piece = handle.get_slice(key)
                shapes[key], dtype_bits[key] = list(piece.get_shape()), _DTYPE_BITS.get(piece.get_dtype(), 16)
    tensors, fixed, total = {}, 0.0, 0
    for name, shape in shapes.items():
        numel = int(torch.Size(shape).numel())
        total += numel
        if not _BLOCK_LINEAR.match(name) or len(shape) != 2:
            fixed += numel * dtype_bits[name]
            continue
        allowed = [t for t in candidate_types(shape[1]) if wanted is None or t in wanted]
        tensors[name] = TensorChoices(
            name, numel, {t: numel * bits_per_weight(t, shape[1]) + (0 if t == BF16 else _SHAPE_BITS) for t in allowed}
        )
    if not tensors:
        raise InputError(f"{checkpoint} has no decoder-block Linear weights (model.layers.N.*_proj)",
                         "allocate an llm-compressor variant of a Llama-family checkpoint")
    groups: dict[str, list[str]] = {}
    for name in tensors:
        fused = fused_name(name.removesuffix(".weight"))
        if fused is not None:
            groups.setdefault(fused, []).append(name)

    def weights(type_: str, only: set[str] | None = None) -> dict[str, torch.Tensor]:
        names = [n for n, c in tensors.items() if type_ in c.bits and (only is None or n in only)]
        out = {}
        for file in sorted(Path(checkpoint).glob("*.safetensors")):
            with safe_open(str(file), framework="pt") as handle:
                for name in set(names) & set(handle.keys()):
                    out[name] = fake_quantize(handle.get_tensor(name).float(), type_)
        return out

    return CandidateSet(
        backend="compressed-tensors", tensors=tensors, fixed_bits=fixed, total_elements=total, weights=weights,
        identity={"backend": "compressed-tensors", "types": sorted({t for c in tensors.values() for t in c.bits}),
                  "rtn": "compressed-tensors calculate_qparams + fake_quantize"},
        groups={g: m for g, m in groups.items() if len(m) > 1},
    )
