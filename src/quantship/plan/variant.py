"""What a quantized variant on disk is, and how many bytes its weights really take.

The format is read from the artifact itself, the way the serving stacks read it: a
Hugging Face folder's `quantization_config` (compressed-tensors, GPTQ, AWQ, FP8,
bitsandbytes) or a GGUF file's `general.file_type`. Sizes are the files' sizes.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from quantship.errors import InputError

WEIGHT_SUFFIXES = (".safetensors", ".gguf", ".bin", ".pt")
# gguf.LlamaFileType names of the GGUF formats quantship plans.
GGUF_FILE_TYPES = {"MOSTLY_Q8_0": "gguf-q8_0", "MOSTLY_Q4_K_M": "gguf-q4_k_m"}


class VariantInfo(BaseModel):
    path: Path
    format: str
    weights_bytes: int
    files: list[str]
    detected_from: str


def inspect_variant(path: Path) -> VariantInfo:
    """Format and real weight bytes of a variant folder (or a single .gguf file)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"variant {path} does not exist", "pass --variant a quantized model folder or .gguf file")
    ggufs = [path] if path.suffix == ".gguf" else sorted(path.rglob("*.gguf"))
    if ggufs:
        return _gguf_variant(path, ggufs)
    configs = sorted(path.rglob("config.json"), key=lambda p: len(p.parts))
    if not configs:
        raise InputError(
            f"{path} holds neither a config.json nor a .gguf file",
            "pass --variant the folder `quantship quantize` wrote (variants/<name>)",
        )
    folder = configs[0].parent
    files = [f for f in sorted(folder.iterdir()) if f.suffix in WEIGHT_SUFFIXES]
    if not files:
        raise InputError(f"{folder} has a config.json but no weight files", "point --variant at a complete checkpoint")
    config = json.loads(configs[0].read_text(encoding="utf-8"))
    return VariantInfo(
        path=folder,
        format=format_from_config(config, configs[0]),
        weights_bytes=sum(f.stat().st_size for f in files),
        files=[f.name for f in files],
        detected_from=f"{configs[0].name} quantization_config",
    )


def format_from_config(config: dict, where: Path | str = "config.json") -> str:
    """The quantship format id a Hugging Face config's quantization_config describes."""
    quant = config.get("quantization_config")
    if not quant:
        return "bf16"
    method = str(quant.get("quant_method", "")).lower()
    if method == "compressed-tensors":
        return _compressed_tensors_format(quant, where)
    if method in {"gptq", "awq"} and int(quant.get("bits", 4)) == 4:
        return "w4a16"
    if method == "fp8":
        return "w8a8-fp8"
    if method == "bitsandbytes" and quant.get("load_in_4bit") and quant.get("bnb_4bit_quant_type", "nf4") == "nf4":
        return "nf4"
    raise InputError(
        f"{where}: quantization method {method or 'unknown'!r} with these settings is not one quantship plans",
        "plan one of bf16, w8a8-fp8, w8a8-int8, w4a16, nf4, gguf-q8_0, gguf-q4_k_m",
    )


def _compressed_tensors_format(quant: dict, where: Path | str) -> str:
    groups = list((quant.get("config_groups") or {}).values())
    if not groups or not groups[0].get("weights"):
        raise InputError(f"{where}: compressed-tensors config has no weight scheme", "re-export the variant")
    weights = groups[0]["weights"]
    bits, kind = int(weights.get("num_bits", 0)), str(weights.get("type", "int"))
    activations = groups[0].get("input_activations")
    if bits == 8 and kind == "float" and activations:
        return "w8a8-fp8"
    if bits == 8 and kind == "int" and activations:
        return "w8a8-int8"
    if bits == 4 and kind == "int" and not activations:
        return "w4a16"
    raise InputError(
        f"{where}: compressed-tensors scheme {kind}{bits} (activations {'on' if activations else 'off'}) "
        "is not one quantship plans",
        "plan w8a8-fp8, w8a8-int8 or w4a16",
    )


def _gguf_variant(root: Path, files: list[Path]) -> VariantInfo:
    """The planned GGUF type among the files (shards summed); f16 intermediates are ignored."""
    by_type: dict[str, list[Path]] = {}
    for file in files:
        by_type.setdefault(_gguf_file_type(file), []).append(file)
    planned = [name for name in by_type if name in GGUF_FILE_TYPES]
    if len(planned) != 1:
        found = ", ".join(sorted(by_type))
        raise InputError(
            f"{root}: GGUF file types found: {found}; quantship plans exactly one of Q4_K_M or Q8_0 per variant",
            "pass --variant the .gguf file itself, exported as Q4_K_M or Q8_0",
        )
    chosen = by_type[planned[0]]
    return VariantInfo(
        path=root,
        format=GGUF_FILE_TYPES[planned[0]],
        weights_bytes=sum(f.stat().st_size for f in chosen),
        files=[f.name for f in chosen],
        detected_from="GGUF general.file_type",
    )


def _gguf_file_type(file: Path) -> str:
    from gguf import GGUFReader, LlamaFileType

    try:
        field = GGUFReader(file).get_field("general.file_type")
    except (ValueError, OSError) as error:
        raise InputError(f"{file} is not a readable GGUF file ({error})", "re-export the variant") from error
    return LlamaFileType(int(field.contents())).name if field is not None else "unknown"
