"""Command lines of the real servers, built as argument lists (never a shell string).

Pure functions: given a target and options they return the exact argv and the
environment additions, so `--dry-run` prints what would run and tests check it.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from quantship.options import ServeOptions
from quantship.serve.target import ServeTarget
from quantship.validate.gate import SERVED_TOPK

STACKS = ("vllm", "vllm-cpu", "llama.cpp")
UNIX_SOCKET_PATH_MAX = 107
UUID_PATH_LEN = 37  # "/" + a uuid4
SHORT_TMP_PREFIX = "quantship-vllm-"
# The OpenAI server module. vLLM calls it deprecated in favour of `vllm serve`, but that
# console script (and `python -m vllm.entrypoints.cli.main serve`) looks up package
# metadata named "vllm" and fails in the `vllm-cpu` distribution; this module works in both.
VLLM_MODULE = "vllm.entrypoints.openai.api_server"


@dataclass(frozen=True)
class LaunchSpec:
    """A server process to start: argv, environment additions, what it will serve."""

    stack: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    served_model_name: str = ""
    host: str = "127.0.0.1"
    port: int = 8000
    # Extra fields the server needs in a request for greedy, comparable output.
    greedy_extra: dict[str, object] = field(default_factory=dict)

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"

    def shell_line(self) -> str:
        """The command as one copy-pasteable line (env assignments first)."""
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(self.env.items()))
        cmd = shlex.join(self.argv)
        return f"{env} {cmd}" if env else cmd


def vllm_cpu(target: ServeTarget, python: Path, opts: ServeOptions, state_dir: Path) -> LaunchSpec:
    """vLLM's OpenAI server from the `vllm-cpu` venv.

    VLLM_CACHE_ROOT and TMPDIR keep its compile caches out of ~/.cache and /tmp.
    """
    argv = [str(python), "-m", VLLM_MODULE, *_vllm_common(target, opts), "--dtype", "bfloat16"]
    if opts.enforce_eager:
        argv.append("--enforce-eager")
    env = {
        "VLLM_CPU_KVCACHE_SPACE": str(opts.kv_cache_gib),
        "VLLM_CACHE_ROOT": str(state_dir / "vllm-cache"),
        "TMPDIR": str(vllm_tmpdir(state_dir)),
        **_offline_env(),
    }
    return LaunchSpec("vllm-cpu", argv, env, target.name, opts.host, opts.port)


def vllm_tmpdir(state_dir: Path) -> Path:
    """TMPDIR for vLLM: its ZMQ sockets live there as `<TMPDIR>/<uuid4>`, and a Unix
    socket path must stay under 108 bytes, so a deep run directory falls back to a
    short per-run folder in the system temp dir (removed when the server stops)."""
    preferred = state_dir / "tmp"
    if len(str(preferred)) + UUID_PATH_LEN <= UNIX_SOCKET_PATH_MAX:
        return preferred
    digest = hashlib.sha256(str(state_dir).encode()).hexdigest()[:10]
    return Path(tempfile.gettempdir()) / f"{SHORT_TMP_PREFIX}{digest}"


def vllm_gpu(target: ServeTarget, python: Path, opts: ServeOptions) -> LaunchSpec:
    """vLLM on GPUs: `--quantization` from the checkpoint, tensor parallel from the plan."""
    argv = [str(python), "-m", VLLM_MODULE, *_vllm_common(target, opts)]
    if target.artifact.vllm_quantization:
        argv += ["--quantization", target.artifact.vllm_quantization]
    if target.artifact.container == "gguf":
        argv += ["--tokenizer", str(target.folder)]
    argv += [
        "--tensor-parallel-size",
        str(opts.tensor_parallel),
        "--gpu-memory-utilization",
        f"{opts.gpu_memory_utilization:g}",
    ]
    return LaunchSpec("vllm", argv, _offline_env(), target.name, opts.host, opts.port)


def llama_server(target: ServeTarget, binary: Path, opts: ServeOptions) -> LaunchSpec:
    """llama.cpp's C++ `llama-server`: continuous batching over `--parallel` slots.

    The context is split between slots, so it is max_model_len x parallel.
    """
    argv = [
        str(binary),
        "--model",
        str(target.path),
        "--alias",
        target.name,
        "--host",
        opts.host,
        "--port",
        str(opts.port),
        "--ctx-size",
        str(opts.max_model_len * opts.parallel),
        "--parallel",
        str(opts.parallel),
        "--threads",
        str(opts.threads or _physical_cores()),
    ]
    return LaunchSpec("llama.cpp", argv, {}, target.name, opts.host, opts.port, {"repeat_penalty": 1.0})


def llama_cpp_python(target: ServeTarget, python: Path, opts: ServeOptions) -> LaunchSpec:
    """Fallback: llama-cpp-python's server (one request at a time).

    logits_all=false keeps memory flat; interrupt_requests=false lets a streaming
    client finish while another request waits.
    """
    argv = [
        str(python),
        "-m",
        "llama_cpp.server",
        "--model",
        str(target.path),
        "--model_alias",
        target.name,
        "--host",
        opts.host,
        "--port",
        str(opts.port),
        "--n_ctx",
        str(opts.max_model_len),
        "--n_threads",
        str(opts.threads or _physical_cores()),
        "--logits_all",
        "false",
        "--interrupt_requests",
        "false",
    ]
    return LaunchSpec("llama.cpp", argv, {}, target.name, opts.host, opts.port, {"repeat_penalty": 1.0})


def _vllm_common(target: ServeTarget, opts: ServeOptions) -> list[str]:
    return [
        "--model",
        str(target.path),
        "--served-model-name",
        target.name,
        "--host",
        opts.host,
        "--port",
        str(opts.port),
        "--max-model-len",
        str(opts.max_model_len),
        "--generation-config",
        "vllm",
        "--max-logprobs",
        str(SERVED_TOPK),
    ]


def _offline_env() -> dict[str, str]:
    """Never reach a model hub or send usage statistics from a served checkpoint."""
    return {"HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}


def _physical_cores() -> int:
    import psutil

    return psutil.cpu_count(logical=False) or os.cpu_count() or 1
