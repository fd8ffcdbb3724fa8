"""What a user asks for: one quantized variant, as it appears in pipeline.yaml."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Method = Literal[
    "rtn",  # round-to-nearest weights (llm-compressor QuantizationModifier)
    "gptq",  # llm-compressor GPTQModifier
    "awq",  # llm-compressor AWQModifier
    "smoothquant-gptq",  # INT8 W8A8: SmoothQuant then GPTQ
    "fp8-dynamic",  # FP8 weights, dynamic per-token activations
    "fp8-static",  # FP8 weights and calibrated static activation scales
    "gguf",  # llama.cpp converter + quantizer (k-quants, legacy quants)
    "nf4",  # bitsandbytes NF4 through transformers
    "convert",  # another variant -> dequantized bf16 -> GGUF (lineage recorded)
]

Precision = Literal["bf16", "8bit"]


class LayerOverride(BaseModel):
    """Quantize the modules whose names match `pattern` (regex) differently from the scheme.

    `precision`: `bf16` leaves them unquantized; `8bit` quantizes them with the
    method's 8-bit scheme (W8A16 for llm-compressor 4-bit schemes, Q8_0 for GGUF).
    `type` names one exact type instead and wins over `precision`: a ggml type for
    GGUF (`Q5_0`, `Q6_K`, `IQ4_NL`, `BF16`, ...), `W4A16-g<N>`, `W8A16` or `bf16` for
    llm-compressor. Per-tensor mixed precision (quantship.allocate) writes these.
    """

    model_config = ConfigDict(extra="forbid")
    pattern: str
    precision: Precision = "bf16"
    type: str | None = None

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as error:
            raise ValueError(f"invalid regex {value!r}: {error}") from None
        return value


class VariantSpec(BaseModel):
    """One variant to produce; unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    method: Method
    # W4A16 / W8A16 / W8A8 / FP8_DYNAMIC / FP8 for llm-compressor; Q4_K_M, Q8_0, ... for GGUF
    scheme: str | None = None
    group_size: int | Literal["auto"] | None = None
    symmetric: bool = True
    act_order: bool = False
    imatrix: bool = False
    overrides: list[LayerOverride] = Field(default_factory=list)
    source: str | None = None  # method "convert": the variant to convert
