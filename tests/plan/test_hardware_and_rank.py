"""Hardware profiles, CPU detection, and the re-ranking hook `plan --measure` feeds."""

from __future__ import annotations

import itertools
import json

import psutil
import pytest

from quantship.errors import InputError
from quantship.formats.hardware import cpuinfo, detect_cpu, host_memory_bytes, load_hardware, measure_bandwidth_gbs
from quantship.formats.matrix import load_matrix
from quantship.plan.measure import load_measurements
from quantship.plan.rank import prior_ranking, rerank


@pytest.mark.parametrize(
    ("name", "gib", "sm"),
    [("h100", 79.6, 9.0), ("h200", 140.4, 9.0), ("a100-80gb", 80.0, 8.0), ("a100-40gb", 40.0, 8.0),
     ("l4", 22.5, 8.9), ("a10g", 22.5, 8.6)],
)
def test_gpu_profiles(name, gib, sm):
    profile = load_hardware(name)
    assert round(profile.memory_gib, 1) == gib and profile.compute_capability == sm
    assert profile.bandwidth_gbs > 0


def test_unknown_hardware_lists_the_choices():
    with pytest.raises(InputError, match="unknown hardware 'h800'.*h100.*cpu"):
        load_hardware("h800")


def test_profile_file(tmp_path):
    path = tmp_path / "rtx6000.yaml"
    path.write_text("name: RTX 6000 Ada\nkind: gpu\nmemory_gib: 48\ncompute_capability: 8.9\nbandwidth_gbs: 960\n")
    profile = load_hardware(str(path))
    assert (profile.id, profile.memory_bytes, profile.compute_capability) == ("rtx6000", 48 << 30, 8.9)
    path.write_text("name: broken\nkind: tpu\nmemory_gib: 1\n")
    with pytest.raises(InputError, match="is invalid"):
        load_hardware(str(path))


def test_cpuinfo_flags(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("model name\t: Xeon\nflags\t\t: fpu avx2 avx512f amx_int8\n\nmodel name\t: Xeon\n")
    assert cpuinfo(info) == ("Xeon", {"fpu", "avx2", "avx512f", "amx_int8"})


def test_cgroup_limit_caps_host_memory(tmp_path):
    limit = tmp_path / "memory.max"
    limit.write_text("1073741824\n")
    assert host_memory_bytes(limit) == min(1 << 30, psutil.virtual_memory().total)
    limit.write_text("max\n")
    assert host_memory_bytes(limit) == psutil.virtual_memory().total


def test_detect_cpu_with_given_bandwidth():
    cpu = detect_cpu(bandwidth_gbs=12.5)
    assert cpu.kind == "cpu" and cpu.bandwidth_source == "given" and cpu.bandwidth_gbs == 12.5
    assert 0 < cpu.memory_bytes <= psutil.virtual_memory().total


def test_measured_bandwidth_is_positive():
    assert measure_bandwidth_gbs(megabytes=8, repeats=2) > 0


def test_rerank_puts_measured_first_fastest_first():
    ranked = rerank(["a", "b", "c", "d"], {"c": 10.0, "b": 30.0}, "bench")
    assert ranked.order == ["b", "c", "a", "d"] and ranked.basis == "measured"
    with pytest.raises(ValueError):
        rerank(["a"], {"a": float("nan")}, "bench")


def test_cpu_ranking_puts_formats_with_a_prior_first_fastest_first_then_the_prior_order():
    matrix = load_matrix()
    priors = matrix.cpu_priors.tokens_per_s
    ranking = prior_ranking(load_hardware("cpu", bandwidth_gbs=10), 16)
    rated, rest = ranking.order[: len(priors)], ranking.order[len(priors):]
    assert set(rated) == set(priors)
    assert all(priors[a] >= priors[b] for a, b in itertools.pairwise(rated)), rated
    assert rest == [f for f in matrix.priors["cpu"].throughput if f not in priors]
    # a prior is called one: the basis and the source never claim a measurement
    assert ranking.basis == "prior" and ranking.source.startswith("shipped priors:")
    assert ranking.tokens_per_s == priors


def test_load_measurements_resolves_aliases(tmp_path):
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"int8": 400, "W4A16": 200}))
    loaded = load_measurements(path)
    assert loaded.tokens_per_s == {"w8a8-int8": 400, "w4a16": 200} and loaded.source == str(path)
    path.write_text(json.dumps({"source": "bench run 7", "tokens_per_s": {"bf16": -1}}))
    with pytest.raises(InputError, match="-1"):
        load_measurements(path)
    path.write_text(json.dumps({"tokens_per_s": {}}))
    with pytest.raises(InputError, match="invalid"):
        load_measurements(path)

