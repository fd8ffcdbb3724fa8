"""Which backend module handles which method; imported lazily, so a missing optional
toolchain only matters when a variant asks for it."""

from __future__ import annotations

import importlib

from quantship.quantize.base import QuantizeBackend
from quantship.quantize.spec import VariantSpec

# method -> module exposing a `BACKEND` object that implements quantship.quantize.base.QuantizeBackend
BACKEND_MODULES = {
    "rtn": "quantship.quantize.llmcompressor_backend",
    "gptq": "quantship.quantize.llmcompressor_backend",
    "awq": "quantship.quantize.llmcompressor_backend",
    "smoothquant-gptq": "quantship.quantize.llmcompressor_backend",
    "fp8-dynamic": "quantship.quantize.llmcompressor_backend",
    "fp8-static": "quantship.quantize.llmcompressor_backend",
    "nf4": "quantship.quantize.nf4_backend",
    "gguf": "quantship.quantize.gguf_backend",
    "convert": "quantship.quantize.gguf_backend",
}


def backend_for(spec: VariantSpec) -> QuantizeBackend:
    return importlib.import_module(BACKEND_MODULES[spec.method]).BACKEND
