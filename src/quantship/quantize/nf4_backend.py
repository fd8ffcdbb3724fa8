"""NF4 variants: bitsandbytes 4-bit NormalFloat through transformers' BitsAndBytesConfig.

transformers quantizes while loading and saves the packed weights with their absmax
and quant map; the result loads back through transformers (and vLLM's pre-quantized
bitsandbytes path on GPU). Whether the installed bitsandbytes can quantize on this
machine's device is probed with a real 4-bit quantization, not guessed from versions.
"""

from __future__ import annotations

import re
from functools import lru_cache
from importlib import metadata
from pathlib import Path

from quantship.errors import InputError, NotAvailable
from quantship.quantize.base import QuantizeContext, VariantOutput
from quantship.quantize.spec import VariantSpec

BLOCK_SIZE = 64  # bitsandbytes' 4-bit block: one absmax per 64 weights
_NOT_FOR_NF4 = ("group_size", "symmetric", "act_order", "imatrix", "source")


class NF4Backend:
    name = "bitsandbytes"

    def check(self, spec: VariantSpec, ctx: QuantizeContext) -> None:
        self._kept(spec, ctx)
        device_support()

    def _kept(self, spec: VariantSpec, ctx: QuantizeContext) -> list[str]:
        """Modules the overrides keep in bf16 (bitsandbytes cannot mix 4 and 8 bits per layer)."""
        from quantship.quantize.llmcompressor_backend import model_layers

        if (spec.scheme or "NF4").upper() != "NF4":
            raise InputError(
                f"variant {spec.name!r}: method nf4 has only scheme NF4, not {spec.scheme!r}",
                "remove scheme or set it to NF4",
            )
        ignored = [option for option in _NOT_FOR_NF4 if option in spec.model_fields_set]
        if ignored:
            raise InputError(
                f"variant {spec.name!r}: {', '.join(ignored)} do not apply to NF4 (fixed {BLOCK_SIZE}-weight blocks, symmetric codebook)",
                f"remove {', '.join(ignored)} from the variant",
            )
        _, columns = model_layers(Path(ctx.checkpoint))
        kept: list[str] = []
        for override in spec.overrides:
            if override.precision == "8bit":
                raise InputError(
                    f"variant {spec.name!r}: bitsandbytes quantizes a model to 4 or 8 bits, not both per layer",
                    "use precision bf16 for NF4 overrides, or an llm-compressor/GGUF method",
                )
            matched = [n for n in columns if re.search(override.pattern, n)]
            if not matched:
                raise InputError(
                    f"variant {spec.name!r}: layer override {override.pattern!r} matches no Linear layer",
                    "match names like model.layers.0.self_attn.k_proj",
                )
            kept += [n for n in matched if n not in kept]
        return kept

    def quantize(self, spec: VariantSpec, ctx: QuantizeContext, out_dir: Path) -> VariantOutput:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

        from quantship.models.checkpoint import inspect_checkpoint
        from quantship.quantize.variants import safetensors_storage

        kept = self._kept(spec, ctx)
        device = device_support()
        skip = sorted({"lm_head", *kept})  # transformers keeps the output head unquantized by default; say so
        config = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=torch.bfloat16,
            bnb_4bit_use_double_quant=False,
            llm_int8_skip_modules=skip,
        )
        with ctx.console.status(f"{spec.name}: quantizing to NF4 while loading ({device})"):
            model = AutoModelForCausalLM.from_pretrained(
                str(ctx.checkpoint), quantization_config=config, dtype=torch.bfloat16, device_map=device
            )
            model.save_pretrained(str(out_dir))
            AutoTokenizer.from_pretrained(str(ctx.checkpoint)).save_pretrained(str(out_dir))
        import bitsandbytes as bnb

        four_bit = sorted(n for n, m in model.named_modules() if isinstance(m, bnb.nn.Linear4bit))
        del model
        storage = safetensors_storage(out_dir)
        parameters = inspect_checkpoint(Path(ctx.checkpoint)).parameters or 0
        stored = sum(b for n in four_bit for k, b in storage.nbytes.items() if k == f"{n}.weight" or k.startswith(f"{n}.weight."))
        # the packed uint8 codes hold two weights per byte
        four_bit_weights = sum(storage.nbytes[f"{n}.weight"] * 2 for n in four_bit)
        return VariantOutput(
            bits_per_weight=round(storage.total_bytes * 8 / parameters, 4),
            details={
                "library": f"transformers BitsAndBytesConfig, bitsandbytes {metadata.version('bitsandbytes')}",
                "scheme": "NF4",
                "group_size": BLOCK_SIZE,
                "device": device,
                "quant_type": "nf4",
                "compute_dtype": "bfloat16",
                "double_quant": False,
                "kept_bf16": skip,
                "quantized_modules": len(four_bit),
                "quantized_linear_bits_per_weight": round(stored * 8 / four_bit_weights, 4) if four_bit_weights else None,
                "tensor_dtypes": storage.dtype_histogram(),
            },
        )


@lru_cache(maxsize=1)
def device_support() -> str:
    """The device bitsandbytes quantizes on here, proven by quantizing one block."""
    import torch

    try:
        import bitsandbytes.functional as F
    except ImportError:
        raise NotAvailable(
            "method nf4 needs bitsandbytes, which is not installed",
            "pip install bitsandbytes==0.50.2 (it supports CPU and CUDA)",
        ) from None
    device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        F.quantize_4bit(torch.linspace(-1, 1, BLOCK_SIZE, device=device, dtype=torch.bfloat16), blocksize=BLOCK_SIZE, quant_type="nf4")
    except (RuntimeError, NotImplementedError, AttributeError) as error:
        raise NotAvailable(
            f"bitsandbytes {metadata.version('bitsandbytes')} cannot quantize to NF4 on {device} ({str(error).splitlines()[0]})",
            "install a bitsandbytes build that supports this device (>= 0.48 for CPU), or use an llm-compressor/GGUF method",
        ) from None
    return device


BACKEND = NF4Backend()
