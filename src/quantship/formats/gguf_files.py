"""Which files of a GGUF variant folder are the model: quantize writes an importance matrix beside it, also as .gguf."""

from __future__ import annotations

from pathlib import Path

from quantship.errors import InputError

GGUF_FILE = "model.gguf"
IMATRIX_FILE = "imatrix.gguf"


def model_ggufs(folder: Path) -> list[Path]:
    """`model.gguf` (quantize's name) if present, else every .gguf that is not an importance matrix."""
    if (folder / GGUF_FILE).is_file():
        return [folder / GGUF_FILE]
    return [p for p in sorted(folder.glob("*.gguf")) if not p.name.startswith(IMATRIX_FILE.removesuffix(".gguf"))]


def model_gguf(folder: Path) -> Path:
    """The one model file of a GGUF variant folder; a clear error when there is none or several."""
    files = model_ggufs(folder)
    if len(files) != 1:
        raise InputError(f"{folder} holds {len(files)} GGUF model files, expected one", "re-run `quantship quantize` for it")
    return files[0]
