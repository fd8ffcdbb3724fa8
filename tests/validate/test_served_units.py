"""Served-engine gate parts that need no server: KL from a partial top-k, the tolerance checks, the refusals."""

from __future__ import annotations

import pytest
import torch

from quantship.errors import InputError
from quantship.options import Thresholds
from quantship.validate.gate import CheckResult
from quantship.validate.served import Endpoint
from quantship.validate.served_gate import diff_checks
from quantship.validate.windows import tail_bucket_kl, topk_tail_kl


def test_unranked_baseline_tokens_merge_into_the_tail_and_bound_the_kl_from_below():
    gen = torch.Generator().manual_seed(1)
    p_log = torch.log_softmax(torch.randn(32, 40, generator=gen, dtype=torch.float64) * 3, -1)
    q_log = torch.log_softmax(p_log + torch.randn(32, 40, generator=gen, dtype=torch.float64), -1)
    ids = torch.argsort(p_log, dim=1, descending=True)[:, :8]
    exact = topk_tail_kl(ids, p_log.gather(1, ids), q_log)
    everything = torch.ones(ids.shape, dtype=torch.bool)
    assert torch.allclose(tail_bucket_kl(p_log.gather(1, ids), q_log.gather(1, ids), everything), exact, atol=1e-12)
    # The server ranked only some of the baseline's tokens; their log-probs elsewhere are unknown (-inf here).
    known = torch.rand(ids.shape, generator=gen) < 0.6
    q_known = torch.where(known, q_log.gather(1, ids), torch.tensor(float("-inf"), dtype=torch.float64))
    partial = tail_bucket_kl(p_log.gather(1, ids), q_known, known)
    assert torch.isfinite(partial).all()
    assert (partial <= exact + 1e-9).all() and (partial < exact - 1e-6).any()
    # Without the mask the unknown tokens would read as impossible under the server: infinite KL.
    assert torch.isinf(tail_bucket_kl(p_log.gather(1, ids), q_known)).any()


def _served(kl: float, ppl: float, top1: float) -> list[CheckResult]:
    return [
        CheckResult("perplexity", ppl, 0.1, "<="),
        CheckResult("kl_mean", kl, 0.05, "<="),
        CheckResult("top1_agreement", top1, 0.9, ">="),
    ]


def test_served_figures_far_from_in_process_fail_even_within_the_thresholds():
    t = Thresholds()
    in_process = {"perplexity": 0.01, "kl_mean": 0.004, "top1_agreement": 0.97}
    close = diff_checks(_served(0.006, 0.015, 0.965), in_process, t)
    assert [c.passed for c in close] == [True, True, True]
    far = diff_checks(_served(0.045, 0.09, 0.91), in_process, t)  # every figure still inside the gate's thresholds
    assert {c.name: c.passed for c in far} == {
        "served:kl_mean_diff": False, "served:perplexity_diff": False, "served:top1_agreement_diff": False
    }
    missing = diff_checks(_served(0.006, 0.015, 0.965), {"perplexity": None, "kl_mean": 0.004, "top1_agreement": 0.97}, t)
    assert not missing[1].passed and missing[1].error


def test_a_url_that_is_no_openai_server_is_refused_in_one_line():
    with pytest.raises(InputError) as info:
        Endpoint("http://127.0.0.1:9/v1", timeout_s=2)
    assert "not an OpenAI-compatible server" in info.value.one_line()


def test_validate_url_needs_exactly_one_variant(monkeypatch, capsys, tmp_path):
    from tests.support.validate_runs import run_cli

    code, _, err = run_cli(monkeypatch, capsys, "--run-dir", str(tmp_path), "-v", "a", "-v", "b", "--url", "http://127.0.0.1:9")
    assert code == 2 and "exactly one --variant" in err
