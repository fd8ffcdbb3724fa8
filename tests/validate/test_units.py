"""Pure parts of the gate: KL with a tail bucket, greedy divergence, verdicts, selection."""

from __future__ import annotations

import math

import pytest
import torch

from quantship.errors import InputError
from quantship.options import Thresholds
from quantship.rundir import RunDir, read_json
from quantship.validate.charts import pareto_front
from quantship.validate.gate import CheckResult, errored, failed_checks
from quantship.validate.greedy import compare_generation
from quantship.validate.select import select_variant
from quantship.validate.windows import topk_tail_kl


def _full_kl(p_log: torch.Tensor, q_log: torch.Tensor) -> torch.Tensor:
    return (p_log.exp() * (p_log - q_log)).sum(1)


def test_tail_bucket_kl_is_exact_with_full_support_and_a_lower_bound_otherwise():
    gen = torch.Generator().manual_seed(0)
    p_log = torch.log_softmax(torch.randn(64, 50, generator=gen, dtype=torch.float64) * 3, -1)
    q_log = torch.log_softmax(p_log + torch.randn(64, 50, generator=gen, dtype=torch.float64), -1)
    full = _full_kl(p_log, q_log)
    ids = torch.argsort(p_log, dim=1, descending=True)
    assert torch.allclose(topk_tail_kl(ids, p_log.gather(1, ids), q_log), full, atol=1e-9)
    k5 = ids[:, :5]
    partial = topk_tail_kl(k5, p_log.gather(1, k5), q_log)
    assert (partial <= full + 1e-9).all() and (partial > 0).all()
    assert torch.allclose(topk_tail_kl(k5, p_log.gather(1, k5), p_log), torch.zeros(64, dtype=torch.float64), atol=1e-12)


def test_greedy_divergence_near_tie_vs_regression():
    base_topk = torch.tensor([[1, 2], [3, 4], [5, 6]])
    assert compare_generation([1, 3, 5], base_topk, [1, 3, 5], base_topk)["exact"]
    flip = compare_generation([1, 3, 5], base_topk, [1, 4, 9], torch.tensor([[1, 2], [4, 3], [9, 5]]))
    assert flip["divergence"] == 1 and not flip["regression"]
    outside = compare_generation([1, 3, 5], base_topk, [1, 7, 5], torch.tensor([[1, 2], [7, 3], [5, 6]]))
    assert outside["divergence"] == 1 and outside["regression"] and not outside["variant_token_in_baseline_topk"]
    # the variant ranks the baseline's token outside its own top-k: also a regression
    assert compare_generation([1, 3], base_topk, [1, 4], torch.tensor([[1, 2], [4, 8]]))["regression"]
    assert compare_generation([1, 3], base_topk, [1], base_topk)["regression"]


def test_missing_nan_or_errored_checks_fail():
    assert CheckResult("ppl", 0.05, 0.1, "<=").passed
    assert not CheckResult("ppl", 0.11, 0.1, "<=").passed
    assert CheckResult("top1", 0.95, 0.9, ">=").passed and not CheckResult("top1", 0.85, 0.9, ">=").passed
    assert not CheckResult("ppl", None, 0.1, "<=").passed
    assert not CheckResult("ppl", math.nan, 0.1, "<=").passed
    assert not errored("kl", 0.1, "<=", RuntimeError("boom")).passed
    checks = [CheckResult("a", 0.0, 0.1, "<="), errored("b", 0.1, "<=", "no data")]
    assert failed_checks(checks) == ["b"]


def test_thresholds_from_file_and_flags(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("max_perplexity_delta: 0.2\nmax_kl_mean: 0.3\n")
    t = Thresholds.load(path, {"max_kl_mean": 0.01, "min_top1_agreement": None})
    assert (t.max_perplexity_delta, t.max_kl_mean, t.min_top1_agreement) == (0.2, 0.01, 0.9)
    path.write_text("max_perplexity_deltaa: 0.2\n")
    with pytest.raises(InputError, match="max_perplexity_deltaa"):
        Thresholds.load(path, {})
    with pytest.raises(InputError, match="min_top1_agreement"):
        Thresholds.load(None, {"min_top1_agreement": 2})


def test_smallest_passing_selection(tmp_path):
    run = RunDir(tmp_path)
    results = [
        {"variant": "w8", "passed": True, "bits_per_weight": 8.5, "failed_checks": []},
        {"variant": "w4", "passed": True, "bits_per_weight": 4.6, "failed_checks": []},
        {"variant": "w2", "passed": False, "bits_per_weight": 2.6, "failed_checks": ["perplexity"]},
    ]
    chosen = select_variant(run, results, "smallest-passing")
    assert chosen["selected"] == "w4" and "4.600" in chosen["reason"]
    assert read_json(tmp_path / "validation" / "selected.json")["selected"] == "w4"
    assert select_variant(run, results[2:], "smallest-passing")["selected"] is None


def test_pareto_front():
    points = [(16.0, 0.0, "bf16"), (8.5, 1.0, "w8"), (8.6, 2.0, "worse8"), (4.5, 18.0, "w4"), (5.0, 19.0, "bad")]
    assert sorted(pareto_front(points)) == ["bf16", "w4", "w8"]
