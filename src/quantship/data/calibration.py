"""Calibration data: N token windows of L tokens, validated, stored for every quantizer.

Windows are stored as safetensors (`tokens.safetensors`, int32 `input_ids` [N, L]) for
the llm-compressor backends and as plain text (`text.txt`) for tools that tokenize
themselves (llama.cpp's imatrix). When the main source is too short, windows from a
padding source (the user's `--pad-source`, e.g. C4) fill the rest, with a warning.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from quantship import layout
from quantship.data.sources import TextSource, load_documents
from quantship.data.tokens import cut_windows, encode_document, separator_id, token_stream
from quantship.errors import InputError
from quantship.rundir import RunDir, read_json

STAGE = layout.CALIBRATION
TOKENS_FILE = "tokens.safetensors"
TEXT_FILE = "text.txt"
STATS_FILE = "stats.json"
LOW_COVERAGE = 0.10  # vocabulary coverage under which quantship warns (its default, a heuristic)


@dataclass
class CalibrationSet:
    """Calibration windows as the quantizers read them."""

    input_ids: torch.Tensor  # int64 [N, L]
    text_path: Path  # the same windows decoded, one per paragraph
    sha256: str  # hash of tokens.safetensors: the calibration identity in manifests
    stats: dict[str, Any]


def windows_from_source(
    tokenizer, source: TextSource, length: int, seed: int, chat: bool
) -> list[list[int]]:
    """Every full window of `source`, documents shuffled by `seed` before packing."""
    documents = load_documents(source)
    random.Random(seed).shuffle(documents)
    encoded = [encode_document(tokenizer, doc, chat) for doc in documents]
    return cut_windows(token_stream(encoded, separator_id(tokenizer)), length)


def select_windows(
    primary: list[list[int]], padding: list[list[int]], count: int, seed: int
) -> tuple[list[list[int]], int]:
    """`count` windows: a seeded sample of `primary`, topped up from `padding`.

    Returns the windows and how many came from `padding`.
    """
    rng = random.Random(seed)
    if len(primary) >= count:
        return rng.sample(primary, count), 0
    needed = count - len(primary)
    if len(padding) < needed:
        raise InputError(
            f"calibration needs {count} windows but the sources hold only {len(primary) + len(padding)}",
            "lower --samples or --seq-len, or add text with --pad-source",
        )
    return primary + rng.sample(padding, needed), needed


def validate_windows(windows: torch.Tensor, vocab_size: int, pad_ids: set[int]) -> dict[str, Any]:
    """Check shape, id range and emptiness (errors); measure duplicates and coverage (stats)."""
    if windows.ndim != 2 or windows.shape[0] == 0:
        raise InputError(f"calibration windows have shape {tuple(windows.shape)}, expected [N, L] with N > 0", "check the source")
    low, high = int(windows.min()), int(windows.max())
    if low < 0 or high >= vocab_size:
        raise InputError(
            f"calibration token id {high if high >= vocab_size else low} is outside the model's vocabulary (0..{vocab_size - 1})",
            "use the tokenizer that belongs to this checkpoint",
        )
    content = (
        ~torch.isin(windows, torch.tensor(sorted(pad_ids), dtype=windows.dtype)) if pad_ids else torch.ones_like(windows, dtype=torch.bool)
    )
    empty = int((content.sum(dim=1) == 0).sum())
    if empty:
        raise InputError(f"{empty} calibration windows hold only padding/EOS tokens", "use a source with real text")
    rows = [tuple(row.tolist()) for row in windows]
    duplicates = len(rows) - len(set(rows))
    unique_tokens = int(torch.unique(windows).numel())
    return {
        "samples": int(windows.shape[0]),
        "seq_len": int(windows.shape[1]),
        "tokens": int(windows.numel()),
        "unique_tokens": unique_tokens,
        "vocab_size": vocab_size,
        "vocab_coverage": round(unique_tokens / vocab_size, 6),
        "duplicate_windows": duplicates,
        "duplicate_rate": round(duplicates / len(rows), 6),
    }


def warnings_for(stats: dict[str, Any]) -> list[str]:
    warnings = []
    if stats["vocab_coverage"] < LOW_COVERAGE:
        warnings.append(
            f"calibration covers {stats['vocab_coverage']:.1%} of the vocabulary (< {LOW_COVERAGE:.0%}): "
            "rare tokens get no activation statistics; add more or more varied text"
        )
    if stats["duplicate_rate"] > 0:
        warnings.append(f"{stats['duplicate_windows']} calibration windows are duplicates")
    if stats.get("padded_windows"):
        warnings.append(
            f"the main source was too short: {stats['padded_windows']} of {stats['samples']} windows come from the padding source"
        )
    return warnings


def write_calibration(folder: Path, windows: torch.Tensor, tokenizer, stats: dict[str, Any]) -> None:
    from quantship.rundir import atomic_write_json, atomic_write_text

    save_file({"input_ids": windows.to(torch.int32).contiguous()}, str(folder / TOKENS_FILE))
    text = "\n\n".join(tokenizer.decode(row, skip_special_tokens=False) for row in windows.tolist())
    atomic_write_text(folder / TEXT_FILE, text + "\n")
    atomic_write_json(folder / STATS_FILE, stats)


def load_calibration(run_dir: RunDir) -> CalibrationSet:
    """The run's calibration windows; an InputError naming the fix when there are none."""
    folder = run_dir.require(STAGE, "quantship calibrate")
    manifest = run_dir.manifest(STAGE) or {}
    tokens = load_file(str(folder / TOKENS_FILE))["input_ids"].to(torch.int64)
    return CalibrationSet(
        input_ids=tokens,
        text_path=folder / TEXT_FILE,
        sha256=manifest["outputs"][TOKENS_FILE]["sha256"],
        stats=read_json(folder / STATS_FILE),
    )
