"""The exact commands each serving stack builds (what --dry-run prints)."""

from __future__ import annotations

import shlex
from pathlib import Path

from quantship.serve import launch
from quantship.serve.launch import ServeOptions
from quantship.serve.stacks import llamacpp, vllm_cpu, vllm_gpu
from quantship.serve.target import from_model_path
from tests.support.serve_files import W4A16, write_checkpoint, write_gguf


def _flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_vllm_cpu_runs_the_module_from_its_env_eager_with_private_caches(tmp_path):
    target = from_model_path(write_checkpoint(tmp_path / "SmolLM2"))
    spec = vllm_cpu.STACK.launch_spec(
        target, Path("/envs/vllm/bin/python"), ServeOptions(port=8123, kv_cache_gib=2), tmp_path / "serve"
    )
    assert spec.argv[:3] == ["/envs/vllm/bin/python", "-m", "vllm.entrypoints.openai.api_server"]
    assert _flag(spec.argv, "--model") == str(target.path)
    assert _flag(spec.argv, "--served-model-name") == "SmolLM2"
    assert _flag(spec.argv, "--host") == "127.0.0.1" and _flag(spec.argv, "--port") == "8123"
    assert _flag(spec.argv, "--max-model-len") == "2048" and "--enforce-eager" in spec.argv
    assert spec.env["VLLM_CPU_KVCACHE_SPACE"] == "2"
    assert spec.env["VLLM_CACHE_ROOT"].startswith(str(tmp_path))
    assert spec.env["TMPDIR"] == str(launch.vllm_tmpdir(tmp_path / "serve"))
    assert spec.env["HF_HUB_OFFLINE"] == "1"
    assert spec.url == "http://127.0.0.1:8123" and spec.greedy_extra == {}


def test_vllm_gpu_takes_quantization_from_checkpoint_and_tensor_parallel_from_options(tmp_path):
    target = from_model_path(write_checkpoint(tmp_path / "w4", W4A16))
    spec = vllm_gpu.STACK.launch_spec(
        target, Path("python3"), ServeOptions(tensor_parallel=4, gpu_memory_utilization=0.85), tmp_path
    )
    assert _flag(spec.argv, "--quantization") == "compressed-tensors"
    assert _flag(spec.argv, "--tensor-parallel-size") == "4"
    assert _flag(spec.argv, "--gpu-memory-utilization") == "0.85"
    assert "--enforce-eager" not in spec.argv and "VLLM_CPU_KVCACHE_SPACE" not in spec.env


def test_vllm_gpu_bf16_has_no_quantization_flag(tmp_path):
    spec = vllm_gpu.STACK.launch_spec(
        from_model_path(write_checkpoint(tmp_path / "m")), Path("python3"), ServeOptions(), tmp_path
    )
    assert "--quantization" not in spec.argv


def test_llama_server_gets_slots_context_threads_and_greedy_extra(tmp_path):
    gguf = write_gguf(tmp_path / "m.Q4_K_M.gguf")
    spec = llamacpp.STACK.launch_spec(
        from_model_path(gguf, name="q4"),
        Path("/opt/llama-server"),
        ServeOptions(port=9000, parallel=4, threads=2, max_model_len=1024),
        tmp_path,
    )
    assert spec.argv[0] == "/opt/llama-server" and _flag(spec.argv, "--model") == str(gguf)
    assert _flag(spec.argv, "--alias") == "q4"
    assert _flag(spec.argv, "--ctx-size") == "4096" and _flag(spec.argv, "--parallel") == "4"
    assert _flag(spec.argv, "--threads") == "2"
    assert spec.greedy_extra == {"repeat_penalty": 1.0}


def test_llama_cpp_python_fallback_disables_logits_all_and_interrupts(tmp_path):
    gguf = write_gguf(tmp_path / "m.gguf")
    spec = llamacpp.llama_cpp_python(from_model_path(gguf), Path("/venv/python"), ServeOptions())
    assert spec.argv[1:3] == ["-m", "llama_cpp.server"]
    assert _flag(spec.argv, "--logits_all") == "false" and _flag(spec.argv, "--interrupt_requests") == "false"


def test_shell_line_round_trips_through_a_shell_parser(tmp_path):
    folder = write_checkpoint(tmp_path / "dir with space")
    spec = vllm_cpu.STACK.launch_spec(from_model_path(folder), Path("/p/python"), ServeOptions(), tmp_path)
    words = shlex.split(spec.shell_line())
    env_words = [w for w in words if "=" in w and w.split("=")[0].isupper()]
    assert dict(w.split("=", 1) for w in env_words) == spec.env
    assert words[len(env_words) :] == spec.argv


def test_url_of_wildcard_and_ipv6_hosts(tmp_path):
    target = from_model_path(write_checkpoint(tmp_path / "m"))
    assert vllm_gpu.STACK.launch_spec(target, Path("p"), ServeOptions(host="0.0.0.0", port=1), tmp_path).url == (
        "http://127.0.0.1:1"
    )
    assert vllm_gpu.STACK.launch_spec(target, Path("p"), ServeOptions(host="::1", port=1), tmp_path).url == (
        "http://[::1]:1"
    )


def test_vllm_tmpdir_stays_short_enough_for_its_unix_sockets(tmp_path):
    shallow = launch.vllm_tmpdir(Path("/r/serve"))
    assert shallow == Path("/r/serve/tmp")
    deep = launch.vllm_tmpdir(Path("/" + "d" * 120) / "serve")
    assert len(str(deep)) + launch.UUID_PATH_LEN <= launch.UNIX_SOCKET_PATH_MAX
    assert deep.name.startswith(launch.SHORT_TMP_PREFIX)
    assert deep == launch.vllm_tmpdir(Path("/" + "d" * 120) / "serve")  # same run, same folder
