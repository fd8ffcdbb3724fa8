"""Model intake: verify a local Hugging Face checkpoint before spending time on it.

Everything here reads headers and metadata only, so a broken checkpoint is refused in
seconds with a one-line error that names the file and the fix, and nothing is written.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from quantship.errors import InputError

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")
_DTYPE_BYTES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
    "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "U32": 4, "U64": 8, "F8_E8M0": 1,
}
_MAX_HEADER = 100 << 20  # safetensors caps headers at 100 MB


@dataclass
class CheckpointInfo:
    """What intake learned about a checkpoint; recorded in baseline.json."""

    path: str
    architecture: str
    model_type: str
    weight_format: str  # "safetensors" | "pickle"
    weight_files: list[str]
    parameters: int | None  # None for pickle checkpoints (no header to read)
    dtypes: dict[str, int]  # dtype -> parameter count
    disk_bytes: int
    chat_template: bool
    max_position_embeddings: int | None
    vocab_size: int | None
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def inspect_checkpoint(path: Path, allow_pickle: bool = False) -> CheckpointInfo:
    path = Path(path)
    if not path.exists():
        raise InputError(
            f"model path {path} does not exist",
            "pass a local Hugging Face checkpoint folder (or run `quantship demo-model` for the demo)",
        )
    if not path.is_dir():
        raise InputError(f"model path {path} is a file, not a checkpoint folder", "pass the folder that holds config.json")
    config = _read_config(path)
    architecture = _known_causal_lm(config, path)
    weight_format, weight_files = _weight_files(path, allow_pickle)
    parameters: int | None = None
    dtypes: dict[str, int] = {}
    if weight_format == "safetensors":
        parameters = 0
        for name in weight_files:
            for dtype, count in _safetensors_header_counts(path / name).items():
                dtypes[dtype] = dtypes.get(dtype, 0) + count
                parameters += count
    _require_tokenizer(path)
    chat_template = _has_chat_template(path)
    warnings = [] if chat_template else [f"{path} has no chat template: chat-formatted samples and chat probes are unavailable"]
    text_config = config.get("text_config", config)
    return CheckpointInfo(
        path=str(path.resolve()),
        architecture=architecture,
        model_type=str(config.get("model_type")),
        weight_format=weight_format,
        weight_files=weight_files,
        parameters=parameters,
        dtypes=dtypes,
        disk_bytes=sum(f.stat().st_size for f in path.rglob("*") if f.is_file()),
        chat_template=chat_template,
        max_position_embeddings=text_config.get("max_position_embeddings"),
        vocab_size=text_config.get("vocab_size"),
        warnings=warnings,
    )


def checkpoint_files(path: Path) -> dict[str, Path]:
    """Every file of the checkpoint, by relative name: the inputs a stage hashes."""
    path = Path(path)
    return {
        f.relative_to(path).as_posix(): f
        for f in sorted(path.rglob("*"))
        if f.is_file() and not f.name.startswith(".")
    }


def _read_config(path: Path) -> dict[str, Any]:
    config_path = path / "config.json"
    if not config_path.is_file():
        raise InputError(f"{config_path} is missing", "pass a Hugging Face checkpoint folder that holds config.json")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"{config_path} is not valid JSON ({error})", "restore config.json from the original model") from None
    if not isinstance(config, dict):
        raise InputError(f"{config_path} does not hold a JSON object", "restore config.json from the original model")
    return config


def _known_causal_lm(config: dict[str, Any], path: Path) -> str:
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    model_type = config.get("model_type")
    if model_type not in CONFIG_MAPPING_NAMES:
        raise InputError(
            f"{path / 'config.json'}: model_type {model_type!r} is unknown to transformers",
            "upgrade transformers or check config.json (custom code models are not loaded)",
        )
    architectures = config.get("architectures") or []
    causal = set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())
    for architecture in architectures:
        if architecture in causal:
            return architecture
    if not architectures and model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[model_type]
    raise InputError(
        f"{path / 'config.json'}: architectures {architectures} name no causal language model transformers knows",
        "pass a causal LM checkpoint (e.g. LlamaForCausalLM)",
    )


def _weight_files(path: Path, allow_pickle: bool) -> tuple[str, list[str]]:
    index = path / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise InputError(f"{index} is not a valid shard index ({error})", "restore it from the original model") from None
        shards = sorted(set(weight_map.values()))
        for shard in shards:
            if not (path / shard).is_file():
                raise InputError(f"shard {path / shard} listed in {index.name} is missing", "download or copy the missing shard")
        return "safetensors", shards
    safetensors = sorted(f.name for f in path.glob("*.safetensors"))
    if safetensors:
        return "safetensors", safetensors
    pickles = sorted(f.name for f in path.iterdir() if f.suffix in PICKLE_SUFFIXES)
    if pickles and not allow_pickle:
        raise InputError(
            f"{path / pickles[0]} is a pickle checkpoint, which can run arbitrary code when loaded",
            "convert it to safetensors, or pass --allow-pickle if you trust its source",
        )
    if pickles:
        return "pickle", pickles
    raise InputError(f"{path} holds no weights (*.safetensors)", "copy the model's weight files into the folder")


def _safetensors_header_counts(file: Path) -> dict[str, int]:
    """Parameter count per dtype from a safetensors header; truncation and corruption detected."""
    size = file.stat().st_size
    fix = "re-download or re-copy this shard"
    with open(file, "rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise InputError(f"{file} is truncated ({size} bytes, no safetensors header)", fix)
        (header_len,) = struct.unpack("<Q", prefix)
        if header_len > min(_MAX_HEADER, size - 8):
            raise InputError(f"{file} has a corrupt safetensors header (declared length {header_len} bytes)", fix)
        raw = handle.read(header_len)
    try:
        header = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise InputError(f"{file} has a corrupt safetensors header (not JSON)", fix) from None
    counts: dict[str, int] = {}
    data_end = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (begin, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise InputError(f"{file}: tensor {name!r} has a malformed header entry", fix) from None
        elements = math.prod(shape)
        if dtype not in _DTYPE_BYTES or end - begin != elements * _DTYPE_BYTES[dtype]:
            raise InputError(f"{file}: tensor {name!r} has inconsistent dtype/shape/offsets", fix)
        counts[dtype] = counts.get(dtype, 0) + elements
        data_end = max(data_end, end)
    if 8 + header_len + data_end != size:
        state = "truncated" if 8 + header_len + data_end > size else "longer than its header says"
        raise InputError(
            f"{file} is {state}: header describes {8 + header_len + data_end} bytes, file has {size}", fix
        )
    return counts


def _require_tokenizer(path: Path) -> None:
    has_fast = (path / "tokenizer.json").is_file()
    has_spm = (path / "tokenizer.model").is_file()
    has_bpe = (path / "vocab.json").is_file() and (path / "merges.txt").is_file()
    if not (has_fast or has_spm or has_bpe):
        raise InputError(
            f"{path} has no tokenizer (tokenizer.json, tokenizer.model or vocab.json+merges.txt)",
            "copy the tokenizer files from the original model into the checkpoint folder",
        )


def _has_chat_template(path: Path) -> bool:
    if (path / "chat_template.jinja").is_file() or (path / "chat_template.json").is_file():
        return True
    config = path / "tokenizer_config.json"
    if config.is_file():
        try:
            return bool(json.loads(config.read_text(encoding="utf-8")).get("chat_template"))
        except json.JSONDecodeError:
            raise InputError(f"{config} is not valid JSON", "restore it from the original model") from None
    return False
