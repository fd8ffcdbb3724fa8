"""Intermediates GGUF variants of one run share: the float GGUF and the importance matrix.

Every GGUF variant of a checkpoint starts from the same BF16 conversion, and every
imatrix variant from the same importance matrix over the same calibration windows;
`validate --recover` builds several per-tensor mixes and one candidate file per type. Each is computed once per
run into `<run>/cache/gguf/`, named by the hash of everything that determines it
(checkpoint files, converter, llama.cpp build, calibration), and published by rename,
so a killed conversion never leaves a file that looks finished. The folder can be
deleted at any time; it is rebuilt on demand.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from quantship.models.checkpoint import checkpoint_files
from quantship.rundir import RunDir, sha256_json

CACHE_DIR = "cache/gguf"


def cache_key(run_dir: RunDir, checkpoint: Path, **identity: Any) -> str:
    """Checkpoint file hashes (hash-cached) plus whatever else decides the file."""
    files = run_dir.hash_inputs(checkpoint_files(checkpoint))
    return sha256_json({"checkpoint": files, **identity})[:24]


def cached_file(run_dir: RunDir, name: str, make: Callable[[Path], None]) -> tuple[Path, bool]:
    """The cached file `name`, made by `make(tmp_path)` when missing; returns (path, reused)."""
    folder = run_dir.root / CACHE_DIR
    final = folder / name
    if final.is_file():
        return final, True
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".partial-", suffix=f"-{name}", dir=folder)  # tools read the extension
    os.close(fd)
    try:
        make(Path(tmp))
        os.replace(tmp, final)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return final, False
