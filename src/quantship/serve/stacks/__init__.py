"""The serving stacks `quantship serve --stack` (and pipeline.yaml's `stack:`) names, one module each.

A stack is one server program on one kind of device: what files it loads, the cell of
`formats/data/formats.yaml` that judges it (its matrix engine on its device), the memory
it needs, its command line and the environment it runs in. Pre-flight, `--dry-run`,
`--setup`, `quantship setup`, `plan --measure` and deploy ask the stack object instead of
comparing names.

Adding a stack (SGLang, TGI) is a change to this folder only: write
`serve/stacks/<name>.py` with a `STACK` object implementing `Stack` below, and add
`<name>.STACK` to `STACKS` here. An engine the matrix does not know yet also needs its
cells under `stacks:` in formats.yaml (and `quantship.formats.matrix.STACKS`); deploying
it needs its container image in `quantship.deploy.servers.IMAGES`.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Literal, Protocol

from quantship.errors import InputError
from quantship.formats.identify import Artifact, Container
from quantship.formats.matrix import stack_key
from quantship.options import ServeOptions
from quantship.serve.launch import LaunchSpec
from quantship.serve.stacks import llamacpp, vllm_cpu, vllm_gpu
from quantship.serve.target import ServeTarget

Device = Literal["gpu", "cpu"]


class Stack(Protocol):
    id: str  # what users type: a CLI and pipeline.yaml value
    engine: str  # its engine in the matrix (formats.yaml `stacks:`)
    device: Device  # what it computes on: its matrix cell, its memory check and whether it needs a GPU
    container: Container  # the files it loads
    # The environment quantship builds for it (`quantship setup <id>`): a quantship.envs module
    # with SUMMARY, status() and setup(console, force); None: the user brings the program.
    env: ModuleType | None
    no_served_gate: str | None  # why served-engine validation cannot score it; None: it can

    def check(self, artifact: Artifact) -> None:
        """Refuse files it cannot load with an InputError naming the stack that can."""

    def memory_bytes(self, weights_bytes: int, opts: ServeOptions) -> int:
        """What it needs of its device's memory to serve weights of this size."""

    def launch_spec(self, target: ServeTarget, program: Path, opts: ServeOptions, state_dir: Path) -> LaunchSpec:
        """Its command with the given server program (deploy names the one inside its image)."""

    def local_spec(self, target: ServeTarget, opts: ServeOptions, state_dir: Path, check_env: bool) -> LaunchSpec:
        """Its command on this machine; `check_env=False` (dry run) does not need the program installed."""


# Registry order is auto's preference: the first that loads the files on a device this machine has.
STACKS: dict[str, Stack] = {s.id: s for s in (vllm_gpu.STACK, vllm_cpu.STACK, llamacpp.STACK)}


def stack(name: str) -> Stack:
    """The stack a user means: case and `.`, `-`, `_` do not count (`llamacpp`, `vllm_cpu` resolve)."""
    for candidate in STACKS.values():
        if stack_key(name) == stack_key(candidate.id):
            return candidate
    raise InputError(f"unknown serving stack {name!r}", f"use one of: {', '.join(STACKS)}, auto")


def auto(artifact: Artifact, gpu: dict | None) -> Stack:
    """The default for these files: the first stack that loads them on a device this machine has.

    GGUF: llama.cpp; a checkpoint: vLLM, on the GPU when there is one.
    """
    devices = ("gpu", "cpu") if gpu is not None else ("cpu",)
    return next(s for s in STACKS.values() if s.container == artifact.container and s.device in devices)


def for_engine(engine: str, kind: str) -> Stack | None:
    """The stack serving a matrix engine on a machine of `kind`: one on that device, else on the CPU every machine has."""
    found = [s for s in STACKS.values() if s.engine == engine]
    return next((s for s in found if s.device == kind), next((s for s in found if s.device == "cpu"), None))


def environments() -> dict[str, ModuleType]:
    """The environments `quantship setup` builds, by stack id, alphabetically."""
    return {s.id: s.env for s in sorted(STACKS.values(), key=lambda s: s.id) if s.env is not None}
