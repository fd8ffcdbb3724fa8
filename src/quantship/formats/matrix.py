"""The format x serving stack x hardware matrix, loaded from `data/formats.yaml`.

The decisions live in data so each cell can be checked against its source; this
module only validates that data and answers "can stack S run format F on hardware H,
and if not, why".
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from quantship.errors import InputError
from quantship.formats.hardware import HardwareProfile

Status = Literal["ok", "slow", "refused"]
STACKS = ("vllm", "llama.cpp", "transformers")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FormatSpec(_Strict):
    """One weight format: how many bits a weight costs and what it quantizes."""

    id: str
    label: str
    weight_bits: float = Field(gt=0, le=32)
    quantized: Literal["none", "linear", "all"]
    activation: str
    quality: str
    aliases: tuple[str, ...] = ()


class Cell(_Strict):
    """Whether one stack runs one format on one kind of device."""

    status: Status
    why: str | None = None
    min_sm: float | None = None
    below_sm: float | None = None
    # CPU instruction-set flags (as in /proc/cpuinfo) the stack's kernels need
    needs_cpu_flags: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _reason_required(self) -> Cell:
        gated = self.min_sm is not None or self.below_sm is not None or bool(self.needs_cpu_flags)
        if (self.status != "ok" or gated) and not self.why:
            raise ValueError("every cell that is not plainly ok needs a `why`")
        return self


class StackCells(_Strict):
    gpu: Cell
    cpu: Cell


class StackSpec(_Strict):
    label: str
    default: Cell
    cells: dict[str, StackCells]


class Priors(_Strict):
    latency: tuple[str, ...]
    throughput: tuple[str, ...]


class ThroughputPriors(_Strict):
    """Decode tokens/s assumed for a CPU until `plan --measure` measures the real one."""

    source: str
    cpu_flags: tuple[str, ...]  # of the CPU the figures describe
    tokens_per_s: dict[str, float]


class Matrix(_Strict):
    formats: dict[str, FormatSpec]
    stacks: dict[str, StackSpec]
    default_stack: dict[str, str]
    latency_max_concurrency: int = Field(ge=1)
    priors: dict[Literal["gpu-fp8", "gpu-int8", "cpu"], Priors]
    cpu_priors: ThroughputPriors

    def cell(self, format_id: str, stack: str, kind: str) -> Cell:
        """The cell for one format on one stack and kind of device (the stack's default if none)."""
        spec = self.stacks[stack]
        cells = spec.cells.get(format_id)
        if cells is None:
            return spec.default
        return cells.gpu if kind == "gpu" else cells.cpu

    @model_validator(mode="after")
    def _consistent(self) -> Matrix:
        known = set(self.formats)
        named = set(self.default_stack) | set(self.cpu_priors.tokens_per_s)
        for stack in self.stacks.values():
            named |= set(stack.cells)
        for priors in self.priors.values():
            named |= set(priors.latency) | set(priors.throughput)
        if unknown := named - known:
            raise ValueError(f"matrix names unknown formats: {sorted(unknown)}")
        if missing := known - set(self.default_stack):
            raise ValueError(f"formats without a default stack: {sorted(missing)}")
        if bad := set(self.default_stack.values()) - set(self.stacks):
            raise ValueError(f"default_stack names unknown stacks: {sorted(bad)}")
        self._priors_only_for_what_runs()
        return self

    def _priors_only_for_what_runs(self) -> None:
        """A throughput prior for a format its stack cannot run on that CPU is a made-up figure."""
        flags = set(self.cpu_priors.cpu_flags)
        for format_id in self.cpu_priors.tokens_per_s:
            stack = self.default_stack[format_id]
            cell = self.cell(format_id, stack, "cpu")
            missing = sorted(set(cell.needs_cpu_flags) - flags)
            if cell.status == "refused" or missing:
                lacking = f" (the priors' CPU lacks {', '.join(missing)})" if missing else ""
                raise ValueError(f"cpu_priors has a figure for {format_id}, which {stack} cannot run there{lacking}")


class Support(BaseModel):
    """The matrix's answer for one (format, stack, hardware)."""

    format: str
    stack: str
    status: Status
    reason: str | None = None


@lru_cache(maxsize=1)
def load_matrix() -> Matrix:
    text = resources.files("quantship.formats").joinpath("data/formats.yaml").read_text("utf-8")
    raw = yaml.safe_load(text)
    for key, spec in raw["formats"].items():
        spec["id"] = key
    return Matrix.model_validate(raw)


def resolve_format(name: str) -> str:
    """Canonical format id for a name or alias (`int4` -> `w4a16`)."""
    matrix = load_matrix()
    wanted = name.strip().lower()
    for spec in matrix.formats.values():
        if wanted == spec.id or wanted in spec.aliases:
            return spec.id
    raise InputError(
        f"unknown format {name!r}",
        f"use one of: {', '.join(matrix.formats)} (or auto)",
    )


def stack_key(name: str) -> str:
    """How stack names compare: case and `.`, `-`, `_` do not count, so `llamacpp` and `Llama-CPP` are `llama.cpp`."""
    return name.strip().lower().replace(".", "").replace("-", "").replace("_", "")


def resolve_stack(name: str) -> str:
    """The matrix's engine for a user's spelling of it."""
    for stack in STACKS:
        if stack_key(name) == stack_key(stack):
            return stack
    raise InputError(f"unknown serving stack {name!r}", f"use one of: {', '.join(STACKS)} (or auto)")


def support(format_id: str, stack: str, hardware: HardwareProfile) -> Support:
    """Look one cell up, applying its compute-capability gate to GPUs."""
    matrix = load_matrix()
    if format_id not in matrix.stacks[stack].cells:
        default = matrix.stacks[stack].default
        return Support(format=format_id, stack=stack, status=default.status, reason=default.why)
    cell = matrix.cell(format_id, stack, hardware.kind)
    status, reason = cell.status, cell.why if cell.status != "ok" else None
    if hardware.kind == "cpu" and hardware.arch != "x86_64" and stack == "vllm" and format_id != "bf16":
        status, reason = "refused", f"quantship plans vLLM {format_id} only on x86_64 CPUs (this is {hardware.arch})"
    missing = [flag for flag in cell.needs_cpu_flags if flag not in hardware.cpu_flags]
    if hardware.kind == "cpu" and missing:
        status, reason = "refused", f"{cell.why} (this CPU lacks {', '.join(missing)})"
    if hardware.kind == "gpu":
        sm = hardware.compute_capability
        if (cell.min_sm is not None and sm < cell.min_sm) or (
            cell.below_sm is not None and sm >= cell.below_sm
        ):
            status, reason = "refused", f"{cell.why} ({hardware.name} is SM {sm:.1f})"
    return Support(format=format_id, stack=stack, status=status, reason=reason)


def default_stack(format_id: str) -> str:
    return load_matrix().default_stack[format_id]
