"""A quantized variant as the planner sees it: its matrix format and the bytes its weights take.

What the artifact is comes from `quantship.formats.identify`, the answer every stage uses;
the planner only refuses artifacts its matrix has no format for, since it cannot budget them.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from quantship.errors import InputError
from quantship.formats.identify import identify
from quantship.formats.matrix import load_matrix


class VariantInfo(BaseModel):
    path: Path
    format: str
    weights_bytes: int
    files: list[str]
    detected_from: str


def inspect_variant(path: Path) -> VariantInfo:
    """Format and real weight bytes of a variant folder (or a single .gguf file)."""
    artifact = identify(path)
    if artifact.format is None:
        raise InputError(
            f"{artifact.path}: {artifact.label} is not a format quantship plans",
            f"plan one of {', '.join(load_matrix().formats)}",
        )
    return VariantInfo(
        path=artifact.folder,
        format=artifact.format,
        weights_bytes=artifact.weights_bytes,
        files=[f.name for f in artifact.weight_files],
        detected_from="GGUF general.file_type" if artifact.container == "gguf" else "config.json quantization_config",
    )
