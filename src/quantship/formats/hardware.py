"""Hardware profiles: the shipped GPU table, the detected CPU, or a user's own file.

A plan is only as right as the device it assumes, so the CPU profile is read from
the machine itself (/proc/cpuinfo, psutil, the cgroup memory limit) instead of
guessed, and GPU profiles come from `data/hardware.yaml` with their sources.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import time
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Literal

import psutil
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from quantship.errors import InputError

MIB = 1 << 20
GIB = 1 << 30
CPU_FLAGS_OF_INTEREST = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8")


class HardwareProfile(BaseModel):
    """One device a replica runs on (a GPU, or the whole CPU host)."""

    model_config = ConfigDict(extra="forbid")

    id: str
    name: str
    kind: Literal["gpu", "cpu"]
    memory_bytes: int = Field(gt=0)
    nominal_gb: float | None = None
    bandwidth_gbs: float | None = Field(default=None, gt=0)
    bandwidth_source: str = "datasheet"
    compute_capability: float = 0.0
    arch: str = "x86_64"
    cores: int | None = None
    cpu_flags: tuple[str, ...] = ()

    @property
    def memory_gib(self) -> float:
        return self.memory_bytes / GIB


class _GpuEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    aliases: tuple[str, ...] = ()
    memory_mib: int = Field(gt=0)
    nominal_gb: float = Field(gt=0)
    bandwidth_gbs: float = Field(gt=0)
    compute_capability: float = Field(ge=3.0)


@lru_cache(maxsize=1)
def gpu_profiles() -> dict[str, HardwareProfile]:
    text = resources.files("quantship.formats").joinpath("data/hardware.yaml").read_text("utf-8")
    profiles = {}
    for key, raw in yaml.safe_load(text)["profiles"].items():
        entry = _GpuEntry.model_validate(raw)
        profile = HardwareProfile(
            id=key,
            name=entry.name,
            kind="gpu",
            memory_bytes=entry.memory_mib * MIB,
            nominal_gb=entry.nominal_gb,
            bandwidth_gbs=entry.bandwidth_gbs,
            compute_capability=entry.compute_capability,
        )
        for name in (key, *entry.aliases):
            profiles[name] = profile
    return profiles


def load_hardware(spec: str, bandwidth_gbs: float | None = None) -> HardwareProfile:
    """A profile by name (`h100`), `cpu` (this machine), or a YAML/JSON profile file."""
    key = spec.strip().lower()
    if key == "cpu":
        return detect_cpu(bandwidth_gbs)
    profile = gpu_profiles().get(key)
    if profile is None and Path(spec).suffix.lower() in {".yaml", ".yml", ".json"}:
        profile = _profile_file(Path(spec))
    if profile is None:
        names = sorted({p.id for p in gpu_profiles().values()})
        raise InputError(
            f"unknown hardware {spec!r}",
            f"use one of: {', '.join(names)}, cpu, or a profile file (docs/plan.md)",
        )
    if bandwidth_gbs is not None:
        profile = profile.model_copy(update={"bandwidth_gbs": bandwidth_gbs, "bandwidth_source": "given"})
    return profile


def _profile_file(path: Path) -> HardwareProfile:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        raw.setdefault("id", path.stem)
        if "memory_gib" in raw:
            raw["memory_bytes"] = int(float(raw.pop("memory_gib")) * GIB)
        return HardwareProfile.model_validate(raw)
    except FileNotFoundError as error:
        raise InputError(f"hardware profile {path} does not exist", "check the path") from error
    except (yaml.YAMLError, AttributeError, ValidationError) as error:
        first = str(error).splitlines()[0]
        raise InputError(
            f"hardware profile {path} is invalid ({first})",
            "give id, name, kind (gpu|cpu), memory_gib, compute_capability, bandwidth_gbs",
        ) from error


def detect_cpu(bandwidth_gbs: float | None = None) -> HardwareProfile:
    """This machine as a CPU serving target; bandwidth given, else measured."""
    model, flags = cpuinfo()
    source = "given"
    if bandwidth_gbs is None:
        bandwidth_gbs, source = measure_bandwidth_gbs(), "measured (numpy copy)"
    return HardwareProfile(
        id="cpu",
        name=model or f"{platform.machine()} CPU",
        kind="cpu",
        memory_bytes=host_memory_bytes(),
        bandwidth_gbs=bandwidth_gbs,
        bandwidth_source=source,
        arch=platform.machine(),
        cores=psutil.cpu_count(logical=False) or os.cpu_count(),
        cpu_flags=tuple(f for f in CPU_FLAGS_OF_INTEREST if f in flags),
    )


def local_cpu_flags(path: Path = Path("/proc/cpuinfo")) -> tuple[str, ...]:
    """The instruction-set flags of this CPU that serving kernels depend on."""
    return tuple(f for f in CPU_FLAGS_OF_INTEREST if f in cpuinfo(path)[1])


def cpuinfo(path: Path = Path("/proc/cpuinfo")) -> tuple[str | None, set[str]]:
    model, flags = None, set()
    try:
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name" and model is None:
                model = value.strip()
            elif key in {"flags", "Features"} and not flags:
                flags = set(value.split())
    except OSError:
        pass
    return model, flags


def host_memory_bytes(cgroup: Path = Path("/sys/fs/cgroup/memory.max")) -> int:
    """Physical RAM, capped by the container's cgroup limit when there is one."""
    total = psutil.virtual_memory().total
    try:
        limit = cgroup.read_text(encoding="utf-8").strip()
    except OSError:
        return total
    return min(total, int(limit)) if limit.isdigit() else total


def measure_bandwidth_gbs(megabytes: int = 256, repeats: int = 5) -> float:
    """Best-of-N copy bandwidth of a large array: a read and a write per byte.

    Decode speed on CPU is bound by how fast weights stream from RAM, so this is the
    figure that scales the plan's throughput estimate. About a second of work.
    """
    import numpy as np

    source = np.ones(megabytes * MIB // 8, dtype=np.float64)
    target = np.empty_like(source)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        np.copyto(target, source)
        best = min(best, time.perf_counter() - start)
    return round(2 * source.nbytes / best / 1e9, 1)


def detect_gpu() -> dict | None:
    """The first NVIDIA GPU (name, memory, compute capability), or None on a CPU machine."""
    if shutil.which("nvidia-smi") is None:
        return None
    query = "--query-gpu=name,memory.total,memory.free,compute_cap"
    try:
        done = subprocess.run(
            ["nvidia-smi", query, "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    if done.returncode != 0 or not lines:
        return None
    name, total, free, cap = (part.strip() for part in lines[0].split(","))
    return {
        "name": name,
        "memory_bytes": int(float(total)) << 20,
        "free_bytes": int(float(free)) << 20,
        "compute_capability": float(cap),
        "count": len(lines),
    }


def this_machine(gpu: dict | None) -> HardwareProfile:
    """The device a server started here runs on: `detect_gpu()`'s GPU, else this host's CPU."""
    if gpu is None:
        return HardwareProfile(
            id="cpu", name="this CPU", kind="cpu", memory_bytes=psutil.virtual_memory().total,
            arch=platform.machine(), cpu_flags=local_cpu_flags(),
        )
    return HardwareProfile(
        id="gpu", name=gpu["name"], kind="gpu", memory_bytes=gpu["memory_bytes"],
        compute_capability=gpu["compute_capability"],
    )
