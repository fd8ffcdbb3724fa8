"""The GGUF schemes quantship accepts and what each one asks llama.cpp for.

A scheme is a llama-quantize file type (`Q4_K_M`, ...). `main` is the tensor type the
scheme uses for most weights and `block` its row-length multiple: K-quants need rows
that are a multiple of 256, the legacy types 32. llama.cpp silently falls back to
another type for a tensor whose rows do not fit, which is why the backend reads the
written types back and compares them with what was requested.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GGUFScheme:
    name: str  # llama-quantize's file type name, also the spec's `scheme`
    main: str  # ggml type of most weight tensors
    block: int  # rows must be a multiple of this for `main`
    quantized: bool = True  # False: the converter's float output is the variant
    uses_imatrix: bool = True  # the quantizer reads an importance matrix for this type


SCHEMES: dict[str, GGUFScheme] = {
    s.name: s
    for s in (
        GGUFScheme("BF16", "BF16", 1, quantized=False, uses_imatrix=False),
        GGUFScheme("F16", "F16", 1, quantized=False, uses_imatrix=False),
        GGUFScheme("Q8_0", "Q8_0", 32, uses_imatrix=False),
        GGUFScheme("Q6_K", "Q6_K", 256),
        GGUFScheme("Q5_K_M", "Q5_K", 256),
        GGUFScheme("Q5_K_S", "Q5_K", 256),
        GGUFScheme("Q5_1", "Q5_1", 32),
        GGUFScheme("Q5_0", "Q5_0", 32),
        GGUFScheme("Q4_K_M", "Q4_K", 256),
        GGUFScheme("Q4_K_S", "Q4_K", 256),
        GGUFScheme("Q4_1", "Q4_1", 32),
        GGUFScheme("Q4_0", "Q4_0", 32),
        GGUFScheme("IQ4_NL", "IQ4_NL", 32),
        GGUFScheme("Q3_K_L", "Q3_K", 256),
        GGUFScheme("Q3_K_M", "Q3_K", 256),
        GGUFScheme("Q3_K_S", "Q3_K", 256),
        GGUFScheme("Q2_K", "Q2_K", 256),
    )
}

# LayerOverride.precision -> ggml type for llama-quantize's --tensor-type.
OVERRIDE_TYPES = {"bf16": "BF16", "8bit": "Q8_0"}
# ggml type -> the llama-quantize file type whose `--pure` output puts that type on every
# tensor whose rows fit it (the allocator's per-type candidates); others share the name.
PURE_FTYPES = {"Q3_K": "Q3_K_S", "Q4_K": "Q4_K_S", "Q5_K": "Q5_K_S"}
FLOAT_TYPES = frozenset({"F32", "F16", "BF16"})


def scheme_for(name: str | None) -> GGUFScheme | None:
    """The scheme for a user's spelling (case-insensitive), or None if unknown."""
    if name is None:
        return None
    return SCHEMES.get(name.strip().upper())
