"""Checks that must hold before a server starts, each with the fix when it fails.

Order matters: the cheap refusals (verdict, port, disk) come before hashing
gigabytes of weights. Every check returns a `Check` that goes into the server
record, so a reader can see what was verified and what `--force` overrode.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from quantship.errors import InputError
from quantship.rundir import read_json, sha256_file
from quantship.serve.target import ServeTarget, plan_format

GIB = 1 << 30
LOG_DISK_BYTES = 256 << 20  # server logs and vLLM's compile cache
# Python, torch and the server's own resident memory (see quantship.plan.memory).
CPU_RUNTIME_BYTES = 3 * GIB // 2


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # "ok" | "failed" | "forced" | "skipped"
    detail: str
    fix: str | None = None

    def as_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


def verdict(target: ServeTarget, force: bool) -> Check:
    """A variant must have passed `quantship validate`, as it is now; a plain checkpoint is the control.

    The verdict names the variant fingerprint it judged: a variant requantized under the same
    name since then has no verdict, whatever the old one said.
    """
    if target.variant is None or target.run_dir is None:
        return Check("verdict", "skipped", "plain checkpoint (control): no validation verdict needed")
    path = target.run_dir / "validation" / f"{target.variant}.json"
    current = (target.manifest or {}).get("fingerprint")
    try:
        recorded = read_json(path)
        judged = recorded.get("variant_fingerprint")
        passed = recorded.get("passed") is True
        detail = f"{path} says passed={passed}"
        if passed and current and judged != current:
            passed, detail = False, (f"{path} judged variant fingerprint {judged}, but the variant is now {current} "
                                     "(quantized again since)")
    except FileNotFoundError:
        passed, detail = False, f"no verdict at {path}"
    except (json.JSONDecodeError, AttributeError):
        passed, detail = False, f"{path} is not a valid verdict"
    if passed:
        return Check("verdict", "ok", detail)
    if force:
        return Check("verdict", "forced", f"{detail}; served anyway because of --force")
    return Check(
        "verdict",
        "failed",
        detail,
        f"run `quantship validate --run-dir {target.run_dir}` and serve a passing variant, or pass --force",
    )


def hashes(target: ServeTarget) -> Check:
    """Every file the manifest lists is there with its recorded size and sha256."""
    outputs = (target.manifest or {}).get("outputs")
    if not outputs:
        return Check("hashes", "skipped", "no manifest: plain checkpoint, nothing to compare")
    folder = target.folder
    for rel, recorded in sorted(outputs.items()):
        file = folder / rel
        if not file.is_file():
            return Check("hashes", "failed", f"{file} is missing", "re-run `quantship quantize` for this variant")
        size = file.stat().st_size
        if size != recorded["bytes"] or sha256_file(file) != recorded["sha256"]:
            return Check(
                "hashes",
                "failed",
                f"{file} does not match its manifest (sha256 differs: modified or corrupt)",
                "re-run `quantship quantize` for this variant; never serve edited weights",
            )
    return Check("hashes", "ok", f"{len(outputs)} files match manifest sha256")


def compatibility(target: ServeTarget, stack: str, gpu: dict | None) -> Check:
    """The format x stack x hardware cell of `quantship plan`'s matrix."""
    if target.format == "gguf" and stack != "llama.cpp":
        return Check("compatibility", "failed", f"{stack} does not serve GGUF files here", "use --stack llama.cpp")
    if target.format != "gguf" and stack == "llama.cpp":
        return Check(
            "compatibility",
            "failed",
            f"llama.cpp serves GGUF files, not {target.format} checkpoints",
            "use --stack vllm-cpu (CPU) or vllm (GPU), or quantize a GGUF variant",
        )
    fmt = plan_format(target)
    if fmt is None:
        return Check("compatibility", "skipped", f"{target.format} is not in quantship's matrix; the server decides")
    from quantship.plan.hardware import HardwareProfile, local_cpu_flags
    from quantship.plan.matrix import support

    if gpu is None:
        import platform

        hardware = HardwareProfile(
            id="cpu",
            name="this CPU",
            kind="cpu",
            memory_bytes=_host_memory(),
            arch=platform.machine(),
            cpu_flags=local_cpu_flags(),
        )
    else:
        hardware = HardwareProfile(
            id="gpu",
            name=gpu["name"],
            kind="gpu",
            memory_bytes=gpu["memory_bytes"],
            compute_capability=gpu["compute_capability"],
        )
    cell = support(fmt, "llamacpp" if stack == "llama.cpp" else "vllm", hardware)
    where = f"{fmt} on {stack} ({hardware.kind})"
    if cell.status == "refused":
        return Check(
            "compatibility", "failed", f"{where}: {cell.reason}", "pick another variant or stack (see `quantship plan`)"
        )
    return Check("compatibility", "ok", f"{where}: {cell.status}" + (f" ({cell.reason})" if cell.reason else ""))


def memory(target: ServeTarget, stack: str, kv_cache_gib: int, gpu: dict | None) -> Check:
    """Weights + KV cache + runtime fit in available host (CPU) or free GPU memory."""
    weights = _weight_bytes(target)
    if gpu is not None:
        free = gpu["free_bytes"]
        need = weights // max(1, gpu.get("tensor_parallel", 1))
        where = f"GPU ({free / GIB:.1f} GiB free)"
    else:
        free = psutil.virtual_memory().available
        need = weights + kv_cache_gib * GIB + CPU_RUNTIME_BYTES
        where = f"host memory ({free / GIB:.1f} GiB available)"
    detail = f"needs ~{need / GIB:.1f} GiB (weights {weights / GIB:.2f} GiB) of {where}"
    if need > free:
        return Check("memory", "failed", detail, "stop other servers, lower --kv-cache-gib, or serve a smaller variant")
    return Check("memory", "ok", detail)


def port(host: str, number: int) -> Check:
    """Nothing else listens on the port (a second server would fail late and obscurely)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, number))
        except OSError as error:
            return Check(
                "port",
                "failed",
                f"{host}:{number} is not free ({error.strerror})",
                "pick another --port, or stop what listens there (`quantship serve --stop`)",
            )
    return Check("port", "ok", f"{host}:{number} is free")


def disk(log_dir: Path) -> Check:
    log_dir.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(log_dir).free
    detail = f"{free / GIB:.1f} GiB free for logs in {log_dir}"
    if free < LOG_DISK_BYTES:
        return Check("disk", "failed", detail, f"free at least {LOG_DISK_BYTES >> 20} MiB on that disk")
    return Check("disk", "ok", detail)


def raise_on_failure(checks: list[Check]) -> None:
    for check in checks:
        if check.status == "failed":
            raise InputError(f"pre-flight {check.name}: {check.detail}", check.fix)


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


def _weight_bytes(target: ServeTarget) -> int:
    if target.path.is_file():
        return target.path.stat().st_size
    return sum(f.stat().st_size for f in target.path.glob("*.safetensors")) or sum(
        f.stat().st_size for f in target.path.glob("*.bin")
    )


def _host_memory() -> int:
    return psutil.virtual_memory().total
