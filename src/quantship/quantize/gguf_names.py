"""Per-layer overrides for GGUF: Hugging Face module-name regexes -> GGUF tensor names.

Users name layers the way the checkpoint does (`lm_head`, `model.layers.0.`,
`self_attn.[kv]_proj`); llama.cpp names them `output`, `blk.0.`, `attn_k`. The
`gguf` package's own tensor-name map translates each checkpoint weight, the regex
is matched against the module names, and llama-quantize gets one exact, anchored
`--tensor-type` rule per matched GGUF tensor.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import gguf
from safetensors import safe_open

from quantship.errors import InputError
from quantship.quantize.gguf_types import OVERRIDE_TYPES
from quantship.quantize.spec import LayerOverride

_SUFFIXES = (".weight", ".bias")


@dataclass
class ResolvedOverride:
    pattern: str
    precision: str
    ggml_type: str
    modules: list[str]  # checkpoint module names the pattern matched
    tensors: list[str]  # GGUF tensors that get `ggml_type`


def checkpoint_weight_names(checkpoint: Path) -> list[str]:
    """Names of the tensors stored in a safetensors checkpoint (headers only)."""
    files = sorted(Path(checkpoint).glob("*.safetensors"))
    if not files:
        raise InputError(f"{checkpoint} holds no *.safetensors files", "point the run at a Hugging Face safetensors checkpoint")
    names: list[str] = []
    for file in files:
        with safe_open(file, framework="numpy") as handle:
            names.extend(handle.keys())
    return names


def hf_to_gguf_names(weight_names: list[str], architecture: str, block_count: int) -> dict[str, str]:
    """Checkpoint module name -> GGUF tensor name (`blk.0.attn_k.weight`), for every weight the map knows."""
    arch = next((a for a, n in gguf.MODEL_ARCH_NAMES.items() if n == architecture), None)
    if arch is None:
        raise InputError(
            f"the gguf package has no tensor-name map for architecture {architecture!r}",
            "drop the per-layer overrides for this model or upgrade gguf",
        )
    name_map = gguf.get_tensor_name_map(arch, block_count)
    mapping = {}
    for weight in weight_names:
        if not weight.endswith(".weight"):
            continue
        target = name_map.get_name(weight, try_suffixes=_SUFFIXES)
        if target is not None:
            mapping[weight.removesuffix(".weight")] = target
    return mapping


def resolve_overrides(
    overrides: list[LayerOverride],
    module_to_tensor: dict[str, str],
    gguf_matrices: list[str],
    tied_embeddings: bool,
) -> list[ResolvedOverride]:
    """Each override with the GGUF tensors it selects; one matching nothing is an error.

    With tied embeddings the checkpoint has no `lm_head` weight: llama.cpp's output
    layer reads `token_embd`, so `lm_head` selects that tensor.
    """
    matrices = set(gguf_matrices)
    modules = dict(module_to_tensor)
    if tied_embeddings and "lm_head" not in modules and "output.weight" not in matrices:
        modules["lm_head"] = "token_embd.weight"
    resolved = []
    for override in overrides:
        regex = re.compile(override.pattern)
        hits = sorted(m for m in modules if regex.search(m))
        tensors = sorted({modules[m] for m in hits} & matrices)
        if not tensors:
            raise InputError(
                f"layer override {override.pattern!r} matches no weight matrix of this model",
                "match Hugging Face module names such as 'lm_head', 'model.layers.0.', 'self_attn.k_proj'",
            )
        resolved.append(
            ResolvedOverride(override.pattern, override.precision, ggml_override_type(override), hits, tensors)
        )
    return resolved


def ggml_override_type(override: LayerOverride) -> str:
    """The ggml type an override asks llama-quantize for; an unknown type name is an input error."""
    if override.type is None:
        return OVERRIDE_TYPES[override.precision]
    name = override.type.strip().upper()
    if name not in gguf.GGMLQuantizationType.__members__:
        raise InputError(
            f"layer override {override.pattern!r}: {override.type!r} is not a ggml tensor type",
            "use a type llama-quantize accepts for --tensor-type, such as Q4_0, Q5_0, Q8_0, IQ4_NL, Q4_K, Q6_K or BF16",
        )
    return name


def tensor_type_rules(resolved: list[ResolvedOverride]) -> list[str]:
    """`--tensor-type-file` lines; the first override naming a tensor wins, as in the spec's order."""
    seen: dict[str, str] = {}
    for override in resolved:
        for tensor in override.tensors:
            seen.setdefault(tensor, override.ggml_type)
    return [f"^{re.escape(tensor)}$={ggml_type.lower()}" for tensor, ggml_type in seen.items()]


def ties_embeddings(checkpoint: Path) -> bool:
    config = json.loads((Path(checkpoint) / "config.json").read_text(encoding="utf-8"))
    return bool(config.get("tie_word_embeddings", False))
