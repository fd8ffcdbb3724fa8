"""Task accuracy through lm-evaluation-harness on quantship's offline tasks (tiny Llama, no hub)."""

from __future__ import annotations

import json

from quantship.models.loading import load_tokenizer
from quantship.options import BUILTIN_TASKS
from quantship.rundir import read_json
from quantship.validate.scorers import TransformersScorer
from quantship.validate.tasks import build_task_files, hf_lm, scorer_lm, task_accuracy
from tests.support.validate_runs import add_plain_variant, run_cli


def test_task_files_are_deterministic_multiple_choice(tmp_path):
    assert build_task_files(tmp_path / "a", 30) == build_task_files(tmp_path / "b", 30)
    for name in BUILTIN_TASKS:
        rows = [json.loads(line) for line in (tmp_path / "a" / f"{name}.jsonl").read_text().splitlines()]
        assert len(rows) >= 20
        assert all(len(r["choices"]) == 4 == len(set(r["choices"])) and 0 <= r["label"] < 4 for r in rows)
        assert len({r["label"] for r in rows}) > 1  # the answer is not always in the same slot


def test_scorer_adapter_matches_hflm_and_identical_weights_lose_nothing(validate_run, monkeypatch, capsys, tmp_path):
    run = validate_run
    checkpoint = read_json(run.root / "baseline" / "baseline.json")["checkpoint"]["path"]
    tokenizer = load_tokenizer(checkpoint)
    task_dir = tmp_path / "tasks"
    build_task_files(task_dir, 40)
    scorer = TransformersScorer(run.root / "variants" / "w8", tokenizer, "float32", "cpu")
    via_hflm = task_accuracy(hf_lm(scorer.model, tokenizer), list(BUILTIN_TASKS), task_dir)
    via_adapter = task_accuracy(scorer_lm(scorer, tokenizer), list(BUILTIN_TASKS), task_dir)
    assert via_adapter == via_hflm  # the llama.cpp path scores like HFLM given the same logits

    from pathlib import Path

    add_plain_variant(run, "copy", Path(checkpoint))
    code, _, err = run_cli(
        monkeypatch, capsys, "--run-dir", str(run.root), "--variant", "copy", "--long-window", "128", "--long-windows", "1"
    )
    verdict = read_json(run.root / "validation" / "copy.json")
    for name in BUILTIN_TASKS:
        check = verdict["checks"][f"task:{name}"]
        assert check["value"] == 0 and check["detail"]["baseline_acc"] == check["detail"]["variant_acc"], check
    assert (run.root / "validation" / "baseline-tasks.json").exists()
    assert code == 0, err
