"""Machine and date for a benchmark's JSON, so a committed figure says where and when it was measured.

Every script in `benchmarks/` puts `provenance()` at the top of its result: the CPU model,
its cores, whether the host is bare metal, a virtual machine or a container (figures
from a shared VM are not a workstation's), memory, load and the UTC date.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import time
from pathlib import Path

import psutil

from quantship.formats.hardware import cpuinfo


def host_kind(dockerenv: Path = Path("/.dockerenv")) -> str:
    """'bare metal', 'virtual machine (kvm)', 'container (docker) on virtual machine (kvm)', ..."""
    flags = cpuinfo()[1]
    container = _detect_virt("--container") or ("docker" if dockerenv.exists() else None)
    vm = _detect_virt("--vm") or ("unknown hypervisor" if "hypervisor" in flags else None)
    parts = ([f"container ({container})"] if container else []) + ([f"virtual machine ({vm})"] if vm else [])
    return " on ".join(parts) or "bare metal"


def _detect_virt(kind: str) -> str | None:
    """systemd-detect-virt's answer, where it is installed ('none' means none)."""
    if shutil.which("systemd-detect-virt") is None:
        return None
    done = subprocess.run(["systemd-detect-virt", kind], capture_output=True, text=True, check=False)
    answer = done.stdout.strip()
    return answer if answer and answer != "none" else None


def provenance(**extra) -> dict:
    """{'date', 'machine'}; `extra` adds what the benchmark itself depends on (threads, bandwidth)."""
    model, _ = cpuinfo()
    machine = {
        "cpu_model": model or platform.processor() or platform.machine(),
        "cores_logical": os.cpu_count(),
        "cores_physical": psutil.cpu_count(logical=False),
        "host_kind": host_kind(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        **extra,
    }
    return {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": machine}
