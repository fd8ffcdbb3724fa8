"""Load a checkpoint with transformers for evaluation; one place decides dtype and device."""

from __future__ import annotations

from pathlib import Path

import torch

from quantship.errors import InputError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def default_eval_dtype(device: str) -> str:
    """float32 on CPU (exact and, on most CPUs, faster than bf16 matmuls); bf16 on GPU."""
    return "float32" if device == "cpu" else "bfloat16"


def load_tokenizer(path: Path):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path))
    except Exception as error:  # transformers raises many types for a broken tokenizer
        raise InputError(
            f"could not load the tokenizer in {path} ({type(error).__name__}: {str(error).splitlines()[0]})",
            "copy the tokenizer files from the original model",
        ) from None


def load_causal_lm(path: Path, dtype: str, device: str, allow_pickle: bool = False):
    from transformers import AutoModelForCausalLM

    if dtype not in DTYPES:
        raise InputError(f"unknown dtype {dtype!r}", f"use one of {', '.join(DTYPES)}")
    model = AutoModelForCausalLM.from_pretrained(
        str(path), dtype=DTYPES[dtype], use_safetensors=not allow_pickle, trust_remote_code=False
    )
    return model.to(device).eval()
