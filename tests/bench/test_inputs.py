"""Inputs: prompt files, URLs, model names, Prometheus text."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from quantship.bench.prom import HistogramTotals, compare_means, histogram_totals
from quantship.bench.prompts import builtin_prompts, load_prompts
from quantship.bench.targets import distinct_labels, normalise_url, resolve_target
from quantship.errors import InputError
from tests.support.openai_stub import OpenAIStub


def test_builtin_prompts_are_distinct():
    prompts = builtin_prompts()
    assert len(prompts) >= 30 and len({p.prompt for p in prompts}) == len(prompts)
    assert load_prompts("builtin") == prompts


def test_jsonl_prompts_in_both_shapes(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(
        '{"prompt": "Hi there"}\n\n{"messages": [{"role": "system", "content": "Be brief."}, '
        '{"role": "user", "content": "Why?"}]}\n'
    )
    plain, chat = load_prompts(str(path))
    assert plain.messages() == [{"role": "user", "content": "Hi there"}] and plain.text() == "Hi there"
    assert chat.messages()[0]["role"] == "system" and chat.text() == "Be brief.\nWhy?"


@pytest.mark.parametrize(
    "content, problem",
    [
        ("not json\n", "p.jsonl:1 is not JSON"),
        ('{"prompt": "ok"}\n{"text": 3}\n', "p.jsonl:2 has neither"),
        ("\n\n", "has no prompts"),
    ],
)
def test_bad_prompt_files_name_the_line(tmp_path, content, problem):
    path = tmp_path / "p.jsonl"
    path.write_text(content)
    with pytest.raises(InputError, match=problem):
        load_prompts(str(path))
    with pytest.raises(InputError, match="does not exist"):
        load_prompts(str(tmp_path / "missing.jsonl"))


@pytest.mark.parametrize(
    "url, expected",
    [
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000/v1"),
        ("http://127.0.0.1:8000/", "http://127.0.0.1:8000/v1"),
        ("http://127.0.0.1:8000/v1/", "http://127.0.0.1:8000/v1"),
        ("https://gw.example/llm/v1", "https://gw.example/llm/v1"),
    ],
)
def test_urls_are_normalised_to_the_v1_root(url, expected):
    assert normalise_url(url) == expected


def test_bad_or_unreachable_urls_are_input_errors():
    with pytest.raises(InputError, match="not an http"):
        normalise_url("127.0.0.1:8000")
    with OpenAIStub() as stub:
        url = stub.url
    with pytest.raises(InputError, match="cannot reach"):
        resolve_target(url, None, "chat", None)


def test_model_defaults_to_the_served_one_and_typos_are_refused():
    with OpenAIStub(model="SmolLM2") as stub:
        target = resolve_target(stub.url, None, "chat", None)
        assert (target.model, target.label, target.base_url) == ("SmolLM2", "SmolLM2", stub.base_url)
        assert target.prometheus_url == stub.url + "/metrics"
        with pytest.raises(InputError, match="does not serve a model named 'smollm'"):
            resolve_target(stub.url, "smollm", "chat", None)
        a, b = distinct_labels(target, target)
        assert a.label != b.label


def test_histogram_totals_add_series_of_the_model_under_test():
    registry = CollectorRegistry()
    hist = Histogram("vllm:e2e_request_latency_seconds", "e2e", ["model_name"], registry=registry)
    Counter("vllm:e2e_request_latency_seconds_fake", "not a histogram", registry=registry).inc(7)
    for value in (0.5, 1.5):
        hist.labels("m").observe(value)
    hist.labels("other").observe(9.0)
    text = generate_latest(registry).decode()
    assert histogram_totals(text, ["vllm:e2e_request_latency_seconds"], "m") == {
        "vllm:e2e_request_latency_seconds": HistogramTotals(sum=2.0, count=2)
    }
    assert histogram_totals(text, ["vllm:e2e_request_latency_seconds"])["vllm:e2e_request_latency_seconds"].count == 3
    assert histogram_totals(text, ["vllm:time_to_first_token_seconds"]) == {}


def test_compare_means_tolerance_and_missing_server_data():
    close = compare_means("ttft", [0.10, 0.10], HistogramTotals(sum=0.19, count=2))
    assert close.agree and close.relative_diff == pytest.approx(-0.05)
    far = compare_means("ttft", [0.10], HistogramTotals(sum=0.2, count=1))
    assert not far.agree and far.relative_diff == pytest.approx(1.0)
    short = compare_means("ttft", [0.087, 0.087], HistogramTotals(sum=2 * 0.078, count=2))  # 10.7%, 9 ms
    assert short.agree and short.relative_diff == pytest.approx(-0.1034, abs=1e-3)
    ci = compare_means("ttft", [0.0958], HistogramTotals(sum=0.0807, count=1))  # 15.8%, 15 ms: seen in CI on 2 cores
    assert ci.agree
    wrong_thing = compare_means("ttft", [0.060], HistogramTotals(sum=0.030, count=1))  # 30 ms: past the overhead
    assert not wrong_thing.agree
    nothing = compare_means("e2e", [0.1], HistogramTotals())
    assert (nothing.server_mean_ms, nothing.agree) == (None, False)
