"""The serving-stack registry: names, the default, refusals, and its ties to the matrix."""

from __future__ import annotations

import pytest

from quantship.errors import InputError
from quantship.formats.matrix import load_matrix, stack_key
from quantship.options import ServeOptions
from quantship.serve.stacks import STACKS, auto, environments, for_engine, stack
from quantship.serve.target import from_model_path
from tests.support.serve_files import W4A16, make_variant, write_checkpoint, write_gguf

GPU = {"name": "H100", "memory_bytes": 80 << 30, "free_bytes": 80 << 30, "compute_capability": 9.0}


def test_the_user_facing_ids_are_the_registry():
    assert list(STACKS) == ["vllm", "vllm-cpu", "llama.cpp"]
    assert len({stack_key(s) for s in STACKS}) == len(STACKS)  # no two spellings collide


@pytest.mark.parametrize(
    ("name", "expected"),
    [("vllm", "vllm"), ("vllm-cpu", "vllm-cpu"), ("llama.cpp", "llama.cpp"), ("llamacpp", "llama.cpp"),
     ("llama-cpp", "llama.cpp"), ("vllm_cpu", "vllm-cpu"), (" LLAMA.CPP ", "llama.cpp"), ("VLLM", "vllm")],
)
def test_ids_and_aliases_resolve(name, expected):
    assert stack(name).id == expected


def test_an_unknown_stack_is_one_line_naming_the_valid_ones():
    with pytest.raises(InputError) as caught:
        stack("tgi")
    line = caught.value.one_line()
    assert "unknown serving stack 'tgi'" in line and "vllm, vllm-cpu, llama.cpp, auto" in line and "\n" not in line


def test_auto_picks_llama_cpp_for_gguf_and_vllm_by_device_for_a_checkpoint(tmp_path, run_dir):
    gguf = from_model_path(write_gguf(tmp_path / "m.Q4_K_M.gguf")).artifact
    checkpoint = from_model_path(write_checkpoint(tmp_path / "m", W4A16)).artifact
    assert auto(gguf, None).id == "llama.cpp" and auto(gguf, GPU).id == "llama.cpp"
    assert auto(checkpoint, GPU).id == "vllm"
    assert auto(checkpoint, None).id == "vllm-cpu"
    variant = from_model_path(make_variant(run_dir, "q4", gguf=True)).artifact
    assert auto(variant, None).id == "llama.cpp"


def test_a_stack_refuses_files_of_the_other_container_with_the_fix(tmp_path):
    gguf = from_model_path(write_gguf(tmp_path / "m.Q4_K_M.gguf")).artifact
    checkpoint = from_model_path(write_checkpoint(tmp_path / "m")).artifact
    for vllm in ("vllm", "vllm-cpu"):
        with pytest.raises(InputError, match=f"{vllm} does not serve GGUF") as caught:
            STACKS[vllm].check(gguf)
        assert caught.value.fix == "use --stack llama.cpp"
        STACKS[vllm].check(checkpoint)
    with pytest.raises(InputError, match="llama.cpp serves GGUF files, not bf16 checkpoints") as caught:
        STACKS["llama.cpp"].check(checkpoint)
    assert "--stack vllm-cpu" in caught.value.fix
    STACKS["llama.cpp"].check(gguf)


def test_every_stack_is_judged_by_a_matrix_engine_and_found_again_from_it():
    engines = load_matrix().stacks
    for serving in STACKS.values():
        assert serving.engine in engines, serving.id
        assert serving.device in ("gpu", "cpu")
        assert for_engine(serving.engine, serving.device) is serving
    assert for_engine("llama.cpp", "gpu").id == "llama.cpp"  # a GPU machine has a CPU too
    assert for_engine("vllm", "cpu").id == "vllm-cpu"
    assert for_engine("transformers", "gpu") is None  # planned, never served


def test_each_command_names_its_stack_and_the_environments_are_the_ones_setup_builds(tmp_path):
    target = from_model_path(write_checkpoint(tmp_path / "m"))
    gguf = from_model_path(write_gguf(tmp_path / "q.Q4_K_M.gguf"))
    for serving in STACKS.values():
        spec = serving.local_spec(gguf if serving.container == "gguf" else target, ServeOptions(), tmp_path, False)
        assert spec.stack == serving.id
    assert list(environments()) == ["llama.cpp", "vllm-cpu"]
    for env in environments().values():
        assert env.SUMMARY and callable(env.status) and callable(env.setup)


def test_memory_needs_beyond_the_weights():
    gib = 1 << 30
    assert STACKS["vllm"].memory_bytes(30 * gib, ServeOptions(tensor_parallel=2)) == 15 * gib
    assert STACKS["vllm-cpu"].memory_bytes(gib, ServeOptions(kv_cache_gib=2)) == gib + 2 * gib + 3 * gib // 2
    assert STACKS["llama.cpp"].memory_bytes(gib, ServeOptions(kv_cache_gib=2)) == gib + 3 * gib // 2
