"""llama.cpp's `llama-server` on the CPU, from the toolchain `quantship setup llama.cpp` builds.

Without a `llama-server` binary, llama-cpp-python's server stands in (one request at a time).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path

from quantship.envs import llamacpp as environment
from quantship.errors import InputError, NotAvailable
from quantship.formats.identify import Artifact
from quantship.options import ServeOptions
from quantship.serve.launch import GIB, LaunchSpec, physical_cores
from quantship.serve.target import ServeTarget

# The server's resident memory besides the weights (budgeted as quantship.plan.memory does a CPU server's).
RUNTIME_BYTES = 3 * GIB // 2
# Its greedy output is comparable only without the repetition penalty it applies by default.
GREEDY_EXTRA: dict[str, object] = {"repeat_penalty": 1.0}


class LlamaCpp:
    id = "llama.cpp"
    engine = "llama.cpp"
    device = "cpu"
    container = "gguf"
    env = environment
    no_served_gate = (
        "llama-server returns no prompt log-probabilities; the gate's in-process llama-cpp-python scorer runs "
        f"the same vendored llama.cpp (llama-cpp-python {environment.LLAMA_CPP_PYTHON_VERSION}) instead"
    )

    def check(self, artifact: Artifact) -> None:
        if artifact.container != self.container:
            raise InputError(
                f"llama.cpp serves GGUF files, not {artifact.label} checkpoints",
                "use --stack vllm-cpu (CPU) or vllm (GPU), or quantize a GGUF variant",
            )

    def memory_bytes(self, weights_bytes: int, opts: ServeOptions) -> int:
        return weights_bytes + RUNTIME_BYTES

    def launch_spec(self, target: ServeTarget, program: Path, opts: ServeOptions, state_dir: Path) -> LaunchSpec:
        """Continuous batching over `--parallel` slots; the context is split between slots, so it is
        max_model_len x parallel."""
        argv = [
            str(program),
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
            str(opts.threads or physical_cores()),
        ]
        return LaunchSpec(self.id, argv, {}, target.name, opts.host, opts.port, dict(GREEDY_EXTRA))

    def local_spec(self, target: ServeTarget, opts: ServeOptions, state_dir: Path, check_env: bool) -> LaunchSpec:
        binary = opts.llama_server or _llama_server_binary()
        if binary is not None:
            return self.launch_spec(target, binary, opts, state_dir)
        if importlib.util.find_spec("llama_cpp") is not None:
            return llama_cpp_python(target, Path(sys.executable), opts)
        if not check_env:
            return self.launch_spec(target, Path("llama-server"), opts, state_dir)
        raise NotAvailable(
            "no llama.cpp server found (llama-server binary or llama-cpp-python)",
            "run `quantship setup llama.cpp` (builds llama-server, ~20 min), or pass --llama-server PATH",
        )


def llama_cpp_python(target: ServeTarget, python: Path, opts: ServeOptions) -> LaunchSpec:
    """The fallback: llama-cpp-python's server.

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
        str(opts.threads or physical_cores()),
        "--logits_all",
        "false",
        "--interrupt_requests",
        "false",
    ]
    return LaunchSpec(STACK.id, argv, {}, target.name, opts.host, opts.port, dict(GREEDY_EXTRA))


def _llama_server_binary() -> Path | None:
    """The compiled `llama-server`: quantship's llama.cpp toolchain, $QUANTSHIP_LLAMA_SERVER, or PATH."""
    if environment.status()["ready"]:
        return environment.load().llama_server
    for candidate in (os.environ.get("QUANTSHIP_LLAMA_SERVER"), shutil.which("llama-server")):
        if candidate and Path(candidate).exists():
            return Path(candidate)
    return None


STACK = LlamaCpp()
