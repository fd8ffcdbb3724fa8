"""What to serve: a variant of a run directory, or a checkpoint path, and its format.

The format decides the stack (GGUF -> llama.cpp, safetensors -> vLLM) and the
`--quantization` vLLM gets, so it is read from the files themselves (config.json's
`quantization_config`, the `.gguf` suffix) and cross-checked with the manifest.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quantship.errors import InputError
from quantship.quantize.gguf_files import model_ggufs
from quantship.rundir import RunDir

# config.json quant_method -> vLLM's --quantization value.
_VLLM_QUANTIZATION = {
    "compressed-tensors": "compressed-tensors",
    "bitsandbytes": "bitsandbytes",
    "fp8": "fp8",
    "gptq": "gptq",
    "awq": "awq",
}


@dataclass(frozen=True)
class ServeTarget:
    """One model to serve and what is known about it."""

    path: Path  # HF checkpoint folder, or the .gguf file
    format: str  # "bf16" | "compressed-tensors" | "gguf" | "bitsandbytes" | ...
    name: str  # served model name
    variant: str | None = None  # set when it comes from a run directory
    run_dir: Path | None = None
    manifest: dict[str, Any] | None = None
    quant_config: dict[str, Any] | None = None  # config.json's quantization_config
    gguf_type: str | None = None  # Q4_K_M, Q8_0, ... from the manifest or file name

    @property
    def vllm_quantization(self) -> str | None:
        if self.format == "gguf":
            return "gguf"
        if self.quant_config:
            return _VLLM_QUANTIZATION.get(str(self.quant_config.get("quant_method")))
        return None

    @property
    def folder(self) -> Path:
        return self.path if self.path.is_dir() else self.path.parent


def from_model_path(path: Path, name: str | None = None) -> ServeTarget:
    """A checkpoint folder (config.json) or a .gguf file (or a folder holding one)."""
    path = Path(path).expanduser().absolute()
    if not path.exists():
        raise InputError(f"model path {path} does not exist", "pass a Hugging Face checkpoint folder or a .gguf file")
    if path.is_file() and path.suffix != ".gguf":
        raise InputError(
            f"{path} is neither a .gguf file nor a checkpoint folder", "pass the folder holding config.json"
        )
    if path.is_dir() and not (path / "config.json").exists():
        ggufs = model_ggufs(path)
        if len(ggufs) != 1:
            raise InputError(
                f"{path} has no config.json and {len(ggufs)} .gguf files",
                "pass a Hugging Face checkpoint folder or exactly one .gguf file",
            )
        path = ggufs[0]
    served = name or (path.stem if path.is_file() else path.name)
    if path.suffix == ".gguf":
        kind = _gguf_type_from_name(path.name) or _gguf_type_from_file(path)
        return ServeTarget(path=path, format="gguf", name=served, gguf_type=kind)
    quant = _quant_config(path)
    fmt = str(quant.get("quant_method")) if quant else "bf16"
    return ServeTarget(path=path, format=fmt, name=served, quant_config=quant)


def from_variant(run_dir: Path, variant: str) -> ServeTarget:
    """A quantized variant `runs/<name>/variants/<variant>/` with its manifest."""
    runs = RunDir(run_dir)
    folder = runs.require(f"variants/{variant}", "quantship quantize")
    manifest = runs.manifest(f"variants/{variant}") or {}
    declared = manifest.get("format") or (manifest.get("extra") or {}).get("format")
    target = from_model_path(folder, name=variant)
    if declared and declared != target.format and not (declared == "safetensors" and target.format == "bf16"):
        raise InputError(
            f"variant {variant}: manifest says format {declared!r} but the files are {target.format!r}",
            f"re-run `quantship quantize --run-dir {run_dir}` for this variant",
        )
    scheme = manifest.get("scheme") or (manifest.get("params") or {}).get("scheme")
    gguf_type = str(scheme).upper() if target.format == "gguf" and scheme else target.gguf_type
    return ServeTarget(
        path=target.path,
        format=target.format,
        name=variant,
        variant=variant,
        run_dir=Path(run_dir),
        manifest=manifest,
        quant_config=target.quant_config,
        gguf_type=gguf_type,
    )


def plan_format(target: ServeTarget) -> str | None:
    """The format id of `quantship plan`'s matrix, or None when it has no such cell."""
    if target.format == "bf16":
        return "bf16"
    if target.format == "gguf":
        known = {"Q4_K_M": "gguf-q4_k_m", "Q8_0": "gguf-q8_0"}
        return known.get(target.gguf_type or "")
    if target.format == "bitsandbytes":
        return "nf4"
    if target.format == "compressed-tensors" and target.quant_config:
        return _compressed_tensors_format(target.quant_config)
    return None


def _compressed_tensors_format(quant: dict[str, Any]) -> str | None:
    groups = list((quant.get("config_groups") or {}).values())
    if not groups:
        return None
    weights = groups[0].get("weights") or {}
    acts = groups[0].get("input_activations")
    bits, kind = weights.get("num_bits"), weights.get("type")
    if bits == 4 and kind == "int" and not acts:
        return "w4a16"
    if bits == 8 and acts and acts.get("num_bits") == 8:
        return "w8a8-int8" if acts.get("type") == "int" else "w8a8-fp8"
    return None


def _quant_config(folder: Path) -> dict[str, Any] | None:
    try:
        config = json.loads((folder / "config.json").read_text("utf-8"))
    except json.JSONDecodeError as error:
        raise InputError(f"{folder / 'config.json'} is not valid JSON ({error})", "restore the checkpoint") from None
    quant = config.get("quantization_config") or config.get("compression_config")
    return quant if isinstance(quant, dict) else None


def _gguf_type_from_file(path: Path) -> str | None:
    """`general.file_type` from the GGUF header (Q4_K_M, Q8_0, ...), None when unreadable.

    GGUFReader parses the whole vocabulary (seconds), so the file name is tried first.
    """
    try:
        from gguf import GGUFReader, LlamaFileType

        field = GGUFReader(path).fields["general.file_type"]
        return LlamaFileType(int(field.parts[field.data[0]][0])).name.removeprefix("MOSTLY_")
    except Exception:  # not a GGUF file, or one without the key: fall back to its name
        return None


def _gguf_type_from_name(name: str) -> str | None:
    upper = name.upper()
    for kind in ("Q4_K_M", "Q4_K_S", "Q5_K_M", "Q5_K_S", "Q6_K", "Q8_0", "Q4_0", "Q4_1", "BF16", "F16"):
        if kind in upper:
            return kind
    return None
