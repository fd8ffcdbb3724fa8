"""The calibrate stage: build, validate and store the calibration windows of a run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from quantship.data.calibration import (
    STAGE,
    STATS_FILE,
    CalibrationSet,
    load_calibration,
    select_windows,
    validate_windows,
    warnings_for,
    windows_from_source,
    write_calibration,
)
from quantship.data.sources import TextSource, load_documents
from quantship.layout import baseline_checkpoint
from quantship.models.checkpoint import checkpoint_files, inspect_checkpoint
from quantship.models.loading import load_tokenizer
from quantship.options import CalibrationOptions
from quantship.rundir import RunDir, read_json, sha256_json, stage_fingerprint
from quantship.stages import Context, Outcome

Options = CalibrationOptions

# Files that decide tokenization: a changed tokenizer invalidates the windows.
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "merges.txt", "tokenizer_config.json", "chat_template.jinja")


def run(run_dir: RunDir, options: CalibrationOptions, context: Context, model: Path | None = None) -> Outcome:
    """Tokenize with `model`'s tokenizer (default: the baseline's checkpoint); kept when unchanged."""
    stats, skipped = run_calibrate(model or baseline_checkpoint(run_dir), run_dir, options, context.console, context.force)
    return Outcome(
        "kept" if skipped else "ran",
        f"{stats['samples']} x {stats['seq_len']} tokens from {stats['source']}, vocabulary coverage "
        f"{stats['vocab_coverage']:.1%}, duplicates {stats['duplicate_windows']}",
    )


def load(run_dir: RunDir) -> CalibrationSet:
    return load_calibration(run_dir)


def run_calibrate(
    model_path: Path, run_dir: RunDir, options: CalibrationOptions, console: Console, force: bool = False
) -> tuple[dict[str, Any], bool]:
    """Build the calibration set; returns (stats, whether it was skipped)."""
    info = inspect_checkpoint(model_path)
    sources = [TextSource.parse(options.source)]
    if options.pad_source:
        sources.append(TextSource.parse(options.pad_source))
    params = options.model_dump()
    tokenizer_files = {k: v for k, v in checkpoint_files(model_path).items() if k in _TOKENIZER_FILES}
    inputs = run_dir.hash_inputs({f"model/{k}": v for k, v in tokenizer_files.items()})
    for role, source in zip(("source_text", "pad_source_text"), sources, strict=False):
        inputs[role] = sha256_json(load_documents(source))
    if not force and run_dir.is_current(STAGE, stage_fingerprint(STAGE, params, inputs)):
        return read_json(run_dir.stage_dir(STAGE) / STATS_FILE), True

    tokenizer = load_tokenizer(model_path)
    with console.status("tokenizing calibration text"):
        primary = windows_from_source(tokenizer, sources[0], options.seq_len, options.seed, options.chat)
        padding = (
            windows_from_source(tokenizer, sources[1], options.seq_len, options.seed, options.chat)
            if len(sources) > 1 and len(primary) < options.samples
            else []
        )
    chosen, padded = select_windows(primary, padding, options.samples, options.seed)
    windows = torch.tensor(chosen, dtype=torch.int64)
    special = {i for i in (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.bos_token_id) if i is not None}
    stats = validate_windows(windows, info.vocab_size or len(tokenizer), special)
    stats.update(
        source=str(sources[0]),
        pad_source=str(sources[1]) if len(sources) > 1 else None,
        padded_windows=padded,
        windows_available=len(primary),
        seed=options.seed,
        chat=options.chat,
    )
    stats["warnings"] = warnings_for(stats)
    for warning in stats["warnings"]:
        console.print(f"[yellow]warning:[/] {warning}")
    with run_dir.stage(STAGE, params, inputs) as stage:
        write_calibration(stage.staging, windows, tokenizer, stats)
        stage.extra["stats"] = stats
    return stats, False
