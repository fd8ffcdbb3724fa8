"""method "convert": a compressed-tensors variant -> dequantized bf16 checkpoint -> GGUF.

llama.cpp's converter reads plain float checkpoints only, so the source variant
(GPTQ/AWQ/RTN from llm-compressor) is first decompressed by transformers'
compressed-tensors integration (`dequantize=True`) and saved as a bf16
checkpoint without `quantization_config`; its weights keep the source's grid, and
the GGUF quantizer then re-quantizes them. The chain is recorded as lineage.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from quantship import layout
from quantship.errors import InputError
from quantship.quantize.base import QuantizeContext, VariantOutput
from quantship.quantize.gguf_pipeline import produce_gguf
from quantship.quantize.spec import VariantSpec
from quantship.rundir import atomic_write_json

_DEQUANTIZED = ".work-dequantized"  # inside the staging folder; removed before returning
_NOT_COPIED = {"config.json", "recipe.yaml", "model.safetensors.index.json"}


def convert_variant(spec: VariantSpec, ctx: QuantizeContext, out_dir: Path) -> VariantOutput:
    """Dequantize the source variant into the staging folder, then run the GGUF pipeline on it."""
    folder = source_checkpoint(spec, ctx)
    work = out_dir / _DEQUANTIZED
    try:
        with ctx.console.status(f"{spec.name}: dequantizing variant {spec.source!r} to bf16"):
            dequantize_checkpoint(folder, work)
        lineage = {
            "source_variant": spec.source,
            "source_format": "compressed-tensors",
            "source_manifest_fingerprint": (ctx.run_dir.manifest(layout.variant(spec.source)) or {}).get("fingerprint"),
            "source_quantization": _quantization_summary(folder),
            "steps": [
                f"variants/{spec.source}: compressed-tensors checkpoint",
                "dequantized to bf16 with transformers (CompressedTensorsConfig(dequantize=True))",
                "converted to GGUF with llama.cpp convert_hf_to_gguf.py",
                f"quantized to {spec.scheme} with llama-quantize",
            ],
        }
        return produce_gguf(spec, ctx, work, out_dir, lineage=lineage)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def source_checkpoint(spec: VariantSpec, ctx: QuantizeContext) -> Path:
    """The source variant's checkpoint folder; it must be a complete compressed-tensors variant."""
    if not spec.source:
        raise InputError(f"variant {spec.name!r}: method convert needs `source: <variant name>`", "add the variant to convert")
    folder = ctx.run_dir.require(layout.variant(spec.source), "quantship quantize")
    config_file = next((p for p in [folder / "config.json", *sorted(folder.glob("*/config.json"))] if p.exists()), None)
    config = json.loads(config_file.read_text(encoding="utf-8")) if config_file else {}
    method = (config.get("quantization_config") or {}).get("quant_method")
    if method != "compressed-tensors":
        raise InputError(
            f"variant {spec.source!r} is not a compressed-tensors checkpoint (quant_method: {method})",
            "convert a variant made by llm-compressor (rtn, gptq, awq), or quantize the baseline with method gguf",
        )
    return config_file.parent


def dequantize_checkpoint(source: Path, target: Path) -> None:
    """Write `source` (compressed-tensors) to `target` as a plain bf16 safetensors checkpoint."""
    import torch
    from huggingface_hub import split_torch_state_dict_into_shards
    from safetensors.torch import save_file
    from transformers import AutoConfig, AutoModelForCausalLM, CompressedTensorsConfig

    model = AutoModelForCausalLM.from_pretrained(
        source, quantization_config=CompressedTensorsConfig(dequantize=True), dtype=torch.bfloat16
    )
    config = AutoConfig.from_pretrained(source)
    del config.quantization_config
    with torch.device("meta"):
        plain = AutoModelForCausalLM.from_config(config)
    wanted = set(plain.state_dict())
    if config.get_text_config().tie_word_embeddings:
        wanted.discard("lm_head.weight")
    state = {k: v.to(torch.bfloat16).contiguous() for k, v in model.state_dict().items() if k in wanted}
    missing = wanted - set(state)
    if missing:
        raise InputError(
            f"dequantizing {source} left {len(missing)} weights missing, e.g. {sorted(missing)[0]}",
            "check the source variant",
        )
    target.mkdir(parents=True, exist_ok=True)
    split = split_torch_state_dict_into_shards(state, max_shard_size="5GB")
    for filename, names in split.filename_to_tensors.items():
        save_file({name: state[name] for name in names}, target / filename, metadata={"format": "pt"})
    if split.is_sharded:
        atomic_write_json(target / "model.safetensors.index.json", {"metadata": split.metadata, "weight_map": split.tensor_to_filename})
    config.dtype = torch.bfloat16
    config.save_pretrained(target)
    for extra in source.iterdir():
        if extra.is_file() and extra.suffix != ".safetensors" and extra.name not in _NOT_COPIED:
            shutil.copy2(extra, target / extra.name)


def _quantization_summary(folder: Path) -> dict[str, Any]:
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))["quantization_config"]
    groups = {name: group.get("weights") for name, group in (config.get("config_groups") or {}).items()}
    return {"format": config.get("format"), "weights": groups, "ignore": config.get("ignore")}
