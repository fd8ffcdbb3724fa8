"""Calibration windows: shape, determinism, padding, validation errors, stored files."""

from __future__ import annotations

import pytest
import torch

from quantship.data.calibration import load_calibration, select_windows, validate_windows
from quantship.errors import InputError
from quantship.progress import stderr_console
from quantship.rundir import RunDir
from quantship.stages.calibrate import CalibrationOptions, run_calibrate


def test_calibrate_stage_writes_validated_windows_and_text(tiny_checkpoint, tmp_path):
    run = RunDir(tmp_path / "run")
    options = CalibrationOptions(samples=8, seq_len=64, seed=3)
    stats, skipped = run_calibrate(tiny_checkpoint, run, options, stderr_console())
    assert not skipped
    calibration = load_calibration(run)
    assert calibration.input_ids.shape == (8, 64)
    assert stats["samples"] == 8 and stats["seq_len"] == 64 and stats["duplicate_windows"] == 0
    assert 0 < stats["vocab_coverage"] <= 1
    assert calibration.text_path.read_text().count("\n\n") >= 7
    assert run.manifest("calibration")["stats"]["source"] == "builtin:calibration"

    _, skipped = run_calibrate(tiny_checkpoint, run, options, stderr_console())
    assert skipped, "unchanged inputs and options must not recompute"
    other, _ = run_calibrate(tiny_checkpoint, run, options.model_copy(update={"seed": 4}), stderr_console())
    assert not torch.equal(load_calibration(run).input_ids, calibration.input_ids)
    again, _ = run_calibrate(tiny_checkpoint, run, options, stderr_console(), force=True)
    assert torch.equal(load_calibration(run).input_ids, calibration.input_ids), "same seed, same windows"


def test_short_source_is_padded_with_a_warning(tiny_checkpoint, tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("A short document about quantization. " * 6)
    run = RunDir(tmp_path / "run")
    options = CalibrationOptions(source=f"text:{short}", pad_source="builtin:calibration", samples=6, seq_len=64)
    stats, _ = run_calibrate(tiny_checkpoint, run, options, stderr_console())
    assert 0 < stats["padded_windows"] < 6
    assert any("too short" in w for w in stats["warnings"])
    with pytest.raises(InputError, match="add text with --pad-source"):
        run_calibrate(tiny_checkpoint, RunDir(tmp_path / "other"), options.model_copy(update={"pad_source": None}), stderr_console())


def test_chat_formatted_samples_use_the_template(tiny_checkpoint, tmp_path):
    import json

    from transformers import AutoTokenizer

    conversations = tmp_path / "chats.jsonl"
    rows = [
        {"messages": [{"role": "user", "content": f"question {i}?"}, {"role": "assistant", "content": f"answer {i}."}]}
        for i in range(200)
    ]
    conversations.write_text("\n".join(json.dumps(r) for r in rows))
    run = RunDir(tmp_path / "run")
    run_calibrate(
        tiny_checkpoint, run, CalibrationOptions(source=f"jsonl:{conversations}#messages", samples=4, seq_len=64), stderr_console()
    )
    start = AutoTokenizer.from_pretrained(tiny_checkpoint).convert_tokens_to_ids("<|im_start|>")
    assert all(start in row for row in load_calibration(run).input_ids.tolist())


def test_validation_rejects_out_of_vocabulary_and_empty_windows():
    with pytest.raises(InputError, match="outside the model's vocabulary"):
        validate_windows(torch.tensor([[1, 2, 999]]), vocab_size=100, pad_ids={0})
    with pytest.raises(InputError, match="only padding"):
        validate_windows(torch.tensor([[0, 0, 0], [1, 2, 3]]), vocab_size=100, pad_ids={0})
    stats = validate_windows(torch.tensor([[1, 2, 3], [1, 2, 3]]), vocab_size=30, pad_ids={0})
    assert stats["duplicate_windows"] == 1 and stats["vocab_coverage"] == pytest.approx(0.1)


def test_select_windows_is_seeded():
    primary = [[i] for i in range(10)]
    assert select_windows(primary, [], 4, seed=1) == select_windows(primary, [], 4, seed=1)
    assert select_windows(primary, [], 4, seed=1) != select_windows(primary, [], 4, seed=2)
    chosen, padded = select_windows(primary[:2], [[100], [101], [102]], 4, seed=0)
    assert padded == 2 and chosen[:2] == [[0], [1]]
