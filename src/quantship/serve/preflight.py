"""Checks that must hold before a server starts, each with the fix when it fails.

Order matters: the cheap refusals (verdict, port, disk) come before hashing
gigabytes of weights. Every check returns a `Check` that goes into the server
record, so a reader can see what was verified and what `--force` overrode.
"""

from __future__ import annotations

import shutil
import socket
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from quantship.errors import InputError
from quantship.formats.hardware import this_machine
from quantship.formats.matrix import support
from quantship.options import ServeOptions
from quantship.rundir import RunDir, sha256_file
from quantship.serve import stacks
from quantship.serve.launch import GIB
from quantship.serve.target import ServeTarget
from quantship.validate.verdicts import Verdict, load_verdict, verdict_path

LOG_DISK_BYTES = 256 << 20  # server logs and vLLM's compile cache


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

    The verdict names the variant and baseline fingerprints it judged: a variant requantized
    under the same name (or a baseline measured again) since then has no verdict, whatever the
    old one said.
    """
    if target.variant is None or target.run_dir is None:
        return Check("verdict", "skipped", "plain checkpoint (control): no validation verdict needed")
    run = RunDir(target.run_dir)
    try:
        found = load_verdict(run, target.variant)
        detail = _describe(found, verdict_path(run, target.variant))
    except InputError as error:
        found, detail = None, error.problem
    passed = found is not None and found.passed
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


def _describe(found: Verdict | None, path: Path) -> str:
    if found is None:
        return f"no verdict at {path}"
    if found.stale:
        return f"{found.path} is stale: {found.stale}"
    return f"{found.path} says passed={found.passed}"


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
    """The stack loads these files, and the format x engine x device cell of `quantship plan`'s matrix allows them.

    `gpu`: the GPU the stack runs on; None: it runs on this host's CPU.
    """
    artifact = target.artifact
    serving = stacks.STACKS[stack]
    try:
        serving.check(artifact)
    except InputError as refused:
        return Check("compatibility", "failed", refused.problem, refused.fix)
    fmt = artifact.format
    if fmt is None:
        return Check("compatibility", "skipped", f"{artifact.label} is not in quantship's matrix; the server decides")
    hardware = this_machine(gpu)
    cell = support(fmt, serving.engine, hardware)
    where = f"{fmt} on {stack} ({hardware.kind})"
    if cell.status == "refused":
        return Check(
            "compatibility", "failed", f"{where}: {cell.reason}", "pick another variant or stack (see `quantship plan`)"
        )
    return Check("compatibility", "ok", f"{where}: {cell.status}" + (f" ({cell.reason})" if cell.reason else ""))


def memory(target: ServeTarget, stack: str, opts: ServeOptions, gpu: dict | None) -> Check:
    """What the stack needs for these weights fits in free GPU memory (`gpu` given) or available host memory."""
    weights = target.artifact.weights_bytes
    need = stacks.STACKS[stack].memory_bytes(weights, opts)
    if gpu is not None:
        free = gpu["free_bytes"]
        where = f"GPU ({free / GIB:.1f} GiB free)"
    else:
        free = psutil.virtual_memory().available
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
