"""vLLM on NVIDIA GPUs, from a vLLM install the user brings (`--vllm-python`, $QUANTSHIP_VLLM_PYTHON)."""

from __future__ import annotations

import os
from pathlib import Path

from quantship.formats.identify import Artifact
from quantship.options import ServeOptions
from quantship.serve.launch import VLLM_MODULE, LaunchSpec, offline_env, refuse_gguf, vllm_args
from quantship.serve.target import ServeTarget


class VllmGpu:
    id = "vllm"
    engine = "vllm"
    device = "gpu"
    container = "safetensors"
    env = None
    no_served_gate = None

    def check(self, artifact: Artifact) -> None:
        refuse_gguf(self.id, artifact)

    def memory_bytes(self, weights_bytes: int, opts: ServeOptions) -> int:
        """Each GPU's share of the weights: vLLM takes its KV cache from what --gpu-memory-utilization leaves."""
        return weights_bytes // max(1, opts.tensor_parallel)

    def launch_spec(self, target: ServeTarget, program: Path, opts: ServeOptions, state_dir: Path) -> LaunchSpec:
        """`--quantization` from the checkpoint, tensor parallel from the plan."""
        argv = [str(program), "-m", VLLM_MODULE, *vllm_args(target, opts)]
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
        return LaunchSpec(self.id, argv, offline_env(), target.name, opts.host, opts.port)

    def local_spec(self, target: ServeTarget, opts: ServeOptions, state_dir: Path, check_env: bool) -> LaunchSpec:
        python = opts.vllm_python or Path(os.environ.get("QUANTSHIP_VLLM_PYTHON") or "python3")
        return self.launch_spec(target, python, opts, state_dir)


STACK = VllmGpu()
