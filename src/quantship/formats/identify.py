"""What format an artifact on disk is: the one answer every stage uses.

Read from the files, the way the serving stacks read them: a Hugging Face folder's
`quantization_config` (compressed-tensors, GPTQ, AWQ, FP8, bitsandbytes) or a GGUF
file's `general.file_type`. `format` is the matrix's id (`w4a16`, `gguf-q4_k_m`, ...)
or None when the matrix has no cell for it (a GGUF Q4_0, a GPTQ 3-bit checkpoint):
such an artifact can still be scored and served, the matrix just has no opinion.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, BinaryIO, Literal

from quantship.errors import InputError
from quantship.formats.gguf_files import model_ggufs

Container = Literal["safetensors", "gguf"]
WEIGHT_SUFFIXES = (".safetensors", ".bin")
# config.json quant_method -> vLLM's --quantization value.
VLLM_QUANTIZATION = {
    "compressed-tensors": "compressed-tensors",
    "bitsandbytes": "bitsandbytes",
    "fp8": "fp8",
    "gptq": "gptq",
    "awq": "awq",
}
# GGUF general.file_type names the matrix has a format for.
GGUF_FORMATS = {"Q8_0": "gguf-q8_0", "Q4_K_M": "gguf-q4_k_m"}
FLOAT_GGUF_TYPES = frozenset({"F32", "F16", "BF16"})


@dataclass(frozen=True)
class Artifact:
    """One model on disk and what it is."""

    path: Path  # the checkpoint folder, or the .gguf file
    container: Container
    quant_method: str | None  # config.json's quant_method; "gguf" for GGUF; None: unquantized
    quant_config: dict[str, Any] | None = None
    gguf_type: str | None = None  # Q4_K_M, Q8_0, ... (general.file_type)

    @property
    def folder(self) -> Path:
        return self.path if self.path.is_dir() else self.path.parent

    @property
    def runtime(self) -> str:
        """The runtime quantship scores it with (validate) and the engine family that serves it."""
        return "llama.cpp" if self.container == "gguf" else "transformers"

    @property
    def vllm_quantization(self) -> str | None:
        """vLLM's --quantization value, None for an unquantized checkpoint."""
        if self.container == "gguf":
            return "gguf"
        return VLLM_QUANTIZATION.get(self.quant_method or "")

    @cached_property
    def format(self) -> str | None:
        """The matrix's format id, or None when the matrix has no such cell."""
        if self.container == "gguf":
            return GGUF_FORMATS.get(self.gguf_type or "")
        return _checkpoint_format(self.quant_method, self.quant_config or {})

    @property
    def weight_files(self) -> list[Path]:
        if self.container == "gguf":
            return [self.path]
        files = sorted(f for f in self.path.iterdir() if f.suffix == ".safetensors")
        return files or sorted(f for f in self.path.iterdir() if f.suffix == ".bin")

    @property
    def weights_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.weight_files)

    @property
    def label(self) -> str:
        """How a person names it: `gguf Q4_K_M`, `compressed-tensors (w4a16)`, `bf16`."""
        if self.container == "gguf":
            return f"gguf {self.gguf_type or 'unknown type'}"
        if self.quant_method is None:
            return "bf16"
        return f"{self.quant_method} ({self.format})" if self.format else self.quant_method

    def as_record(self) -> dict[str, Any]:
        """What a manifest records, so a reader can compare it with the files later."""
        return {"container": self.container, "quant_method": self.quant_method, "gguf_type": self.gguf_type, "format": self.format}


def identify(path: Path) -> Artifact:
    """A checkpoint folder (config.json), a .gguf file, or a folder holding exactly one model .gguf."""
    path = Path(path).expanduser().absolute()
    if not path.exists():
        raise InputError(f"model path {path} does not exist", "pass a Hugging Face checkpoint folder or a .gguf file")
    if path.is_file() and path.suffix != ".gguf":
        raise InputError(f"{path} is neither a .gguf file nor a checkpoint folder", "pass the folder holding config.json")
    if path.is_dir() and not (path / "config.json").exists():
        return _gguf_in_folder(path)
    if path.suffix == ".gguf":
        return Artifact(path=path, container="gguf", quant_method="gguf", gguf_type=gguf_file_type(path))
    quant = _quant_config(path)
    method = str(quant.get("quant_method") or "").lower() if quant else ""
    artifact = Artifact(path=path, container="safetensors", quant_method=method or None, quant_config=quant)
    if not artifact.weight_files:
        raise InputError(f"{path} has a config.json but no weight files", "point at a complete checkpoint folder")
    return artifact


def _gguf_in_folder(folder: Path) -> Artifact:
    """The folder's one model .gguf; a float file beside one quantized file is the converter's intermediate."""
    files = model_ggufs(folder)
    found = [Artifact(path=f, container="gguf", quant_method="gguf", gguf_type=gguf_file_type(f)) for f in files]
    quantized = [a for a in found if a.gguf_type not in FLOAT_GGUF_TYPES]
    if len(found) == 1 or len(quantized) == 1:
        return found[0] if len(found) == 1 else quantized[0]
    types = ", ".join(f"{a.path.name} ({a.gguf_type})" for a in found) or "none"
    raise InputError(
        f"{folder} has no config.json and not exactly one model .gguf file (found: {types})",
        "pass a Hugging Face checkpoint folder or the .gguf file itself",
    )


def gguf_file_type(path: Path) -> str | None:
    """`general.file_type` from the GGUF header (Q4_K_M, Q8_0, BF16, ...), None when the file has none.

    Reads the key/value header only as far as that key (converters write `general.*` first):
    gguf's GGUFReader parses the whole vocabulary first, seconds per call.
    """
    from gguf import LlamaFileType

    try:
        with open(path, "rb") as handle:
            value = _header_value(handle, "general.file_type")
    except (ValueError, OSError, struct.error) as error:
        raise InputError(f"{path} is not a readable GGUF file ({error})", "re-export the variant") from error
    if value is None:
        return None
    return LlamaFileType(int(value)).name.removeprefix("MOSTLY_").replace("ALL_F32", "F32")


def _header_value(handle: BinaryIO, wanted: str) -> Any:
    """One scalar of a GGUF v2/v3 header (little-endian), None when the header lacks it."""
    from gguf import GGUFValueType

    if handle.read(4) != b"GGUF":
        raise ValueError("no GGUF magic")
    version, _tensors, count = struct.unpack("<IQQ", handle.read(20))
    if version < 2:
        raise ValueError(f"GGUF version {version} is older than this reader (2+)")
    scalars = {
        GGUFValueType.UINT8: "<B", GGUFValueType.INT8: "<b", GGUFValueType.UINT16: "<H", GGUFValueType.INT16: "<h",
        GGUFValueType.UINT32: "<I", GGUFValueType.INT32: "<i", GGUFValueType.FLOAT32: "<f", GGUFValueType.BOOL: "<?",
        GGUFValueType.UINT64: "<Q", GGUFValueType.INT64: "<q", GGUFValueType.FLOAT64: "<d",
    }

    def string() -> bytes:
        (length,) = struct.unpack("<Q", handle.read(8))
        return handle.read(length)

    def skip(kind: GGUFValueType) -> None:
        if kind == GGUFValueType.STRING:
            string()
        elif kind == GGUFValueType.ARRAY:
            item, items = struct.unpack("<IQ", handle.read(12))
            item = GGUFValueType(item)
            if item in scalars:
                handle.seek(struct.calcsize(scalars[item]) * items, 1)
            else:
                for _ in range(items):
                    skip(item)
        else:
            handle.seek(struct.calcsize(scalars[kind]), 1)

    for _ in range(count):
        key = string().decode("utf-8")
        (kind,) = struct.unpack("<I", handle.read(4))
        kind = GGUFValueType(kind)
        if key == wanted and kind in scalars:
            return struct.unpack(scalars[kind], handle.read(struct.calcsize(scalars[kind])))[0]
        skip(kind)
    return None


def _quant_config(folder: Path) -> dict[str, Any] | None:
    try:
        config = json.loads((folder / "config.json").read_text("utf-8"))
    except json.JSONDecodeError as error:
        raise InputError(f"{folder / 'config.json'} is not valid JSON ({error})", "restore the checkpoint") from None
    quant = config.get("quantization_config") or config.get("compression_config")
    return quant if isinstance(quant, dict) else None


def _checkpoint_format(method: str | None, quant: dict[str, Any]) -> str | None:
    if method is None:
        return "bf16"
    if method == "compressed-tensors":
        return _compressed_tensors_format(quant)
    if method in {"gptq", "awq"} and int(quant.get("bits", 4)) == 4:
        return "w4a16"
    if method == "fp8":
        return "w8a8-fp8"
    if method == "bitsandbytes" and quant.get("load_in_4bit") and quant.get("bnb_4bit_quant_type", "fp4") == "nf4":
        return "nf4"
    return None


def _compressed_tensors_format(quant: dict[str, Any]) -> str | None:
    """The matrix id of the scheme most weights use (the first config group, as llm-compressor writes it)."""
    groups = list((quant.get("config_groups") or {}).values())
    weights = (groups[0].get("weights") or {}) if groups else {}
    if not weights:
        return None
    bits, kind = int(weights.get("num_bits", 0)), str(weights.get("type", "int"))
    activations = groups[0].get("input_activations")
    if bits == 8 and activations and activations.get("num_bits") == 8:
        return "w8a8-int8" if activations.get("type", "int") == "int" else "w8a8-fp8"
    if bits == 4 and kind == "int" and not activations:
        return "w4a16"
    return None
