"""Start a real server, wait until it answers correctly, and stop it without leftovers.

The server runs in its own session (process group), so Ctrl-C on quantship does not
race the server's own signal handling and `stop()` can end the whole group, vLLM's
engine-core children included. A JSON record (pid, url, command, log) is written
atomically to `<run dir>/serve/<name>.json` so other stages, and `quantship serve
--stop`, can find a detached server.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from quantship import layout
from quantship.errors import GateFailed, InputError, NotAvailable
from quantship.formats.hardware import detect_gpu
from quantship.home import quantship_home
from quantship.options import DEFAULT_READY_TIMEOUT_S
from quantship.plan.api import read_plan
from quantship.rundir import RunDir, atomic_write_json, read_json
from quantship.serve import health, launch, preflight, stacks
from quantship.serve.launch import LaunchSpec, ServeOptions
from quantship.serve.target import ServeTarget, from_model_path, from_variant
from quantship.validate.verdicts import load_selection

Say = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


@dataclass
class RunningServer:
    """A started, ready server. Use as a context manager or call `stop()`."""

    spec: LaunchSpec
    process: subprocess.Popen | None
    pid: int
    log_path: Path
    record_path: Path
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.spec.url

    @property
    def base_url(self) -> str:
        return f"{self.spec.url}/v1"

    @property
    def served_model_name(self) -> str:
        return self.spec.served_model_name

    @property
    def greedy_extra(self) -> dict[str, object]:
        """Request fields that make this stack's greedy output comparable (llama.cpp: repeat_penalty 1)."""
        return dict(self.spec.greedy_extra)

    def alive(self) -> bool:
        if self.process is not None:
            return self.process.poll() is None
        return _pid_alive(self.pid)

    def stop(self, grace_s: float = 30.0) -> int | None:
        """SIGINT the server's group, then SIGTERM, then SIGKILL; returns its exit code."""
        code = _stop_group(self.pid, self.process, grace_s)
        _remove_short_tmpdir(self.spec.env)
        if self.record_path.exists():
            _write_record(
                self.record_path, {**self.record, "status": "stopped", "exit_code": code, "stopped_at": _now()}
            )
        return code

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


SELECTED = "selected"  # --variant selected: the one validate --select chose


def resolve_target(run_dir: Path | None, variant: str | None, model: Path | None) -> ServeTarget:
    if (variant is None) == (model is None):
        raise InputError(
            "serve needs exactly one of --variant or --model",
            "pass --run-dir R --variant NAME for a quantized variant, or --model PATH",
        )
    if variant is not None:
        if run_dir is None:
            raise InputError("--variant needs the run directory", "pass --run-dir runs/<name>")
        return from_variant(run_dir, selected_variant(run_dir) if variant == SELECTED else variant)
    return from_model_path(model)


def selected_variant(run_dir: Path) -> str:
    """The variant `quantship validate --select` chose to ship, while that choice is current."""
    return load_selection(RunDir(run_dir))


def resolve_stack(stack: str, target: ServeTarget, gpu: dict | None, need_gpu: bool = True) -> str:
    """The stack id `--stack` names for this target (`auto`: the registry's default); a GPU stack needs a GPU."""
    if stack.strip().lower() == "auto":
        return stacks.auto(target.artifact, gpu).id
    chosen = stacks.stack(stack)
    if chosen.device == "gpu" and gpu is None and need_gpu:
        raise InputError(
            f"--stack {chosen.id} needs an NVIDIA GPU and none was found (nvidia-smi)",
            f"use --stack {stacks.auto(target.artifact, None).id} on this machine",
        )
    return chosen.id


def planned_tensor_parallel(run_dir: Path | None) -> int:
    """Tensor-parallel size that `quantship plan` chose for the run, else 1 (no plan)."""
    if run_dir is None or RunDir(run_dir).manifest(layout.PLAN) is None:
        return 1
    fit = read_plan(RunDir(run_dir)).chosen.fit
    return max(1, getattr(fit, "tensor_parallel", 1) or 1)


def serve_dir(run_dir: Path | None) -> Path:
    """Where records, logs and scratch of servers go: the run directory, else QUANTSHIP_HOME."""
    return ((Path(run_dir) if run_dir is not None else quantship_home()) / layout.SERVE).absolute()


def build_spec(
    target: ServeTarget,
    stack: str,
    opts: ServeOptions,
    run_dir: Path | None,
    llama_server: Path | None = None,
    vllm_python: Path | None = None,
    check_env: bool = True,
) -> LaunchSpec:
    """The exact command for `stack`; `check_env=False` (dry run) does not require it installed."""
    opts = dataclasses.replace(
        opts, llama_server=llama_server or opts.llama_server, vllm_python=vllm_python or opts.vllm_python
    )
    return stacks.STACKS[stack].local_spec(target, opts, serve_dir(run_dir), check_env)


def start_server(
    *,
    run_dir: Path | None = None,
    variant: str | None = None,
    model: Path | None = None,
    stack: str = "auto",
    options: ServeOptions | None = None,
    force: bool = False,
    spec: LaunchSpec | None = None,
    name: str | None = None,
    llama_server: Path | None = None,
    vllm_python: Path | None = None,
    ready_timeout_s: float = DEFAULT_READY_TIMEOUT_S,
    probe: bool = True,
    say: Say = _quiet,
) -> RunningServer:
    """Pre-flight, launch, wait for readiness, warm up and probe; returns a ready server.

    `spec` launches a given command instead of building one (tests use a stub server);
    the pre-flight checks then cover only the port and the disk.
    """
    opts = options or ServeOptions()
    if opts.port == 0:
        opts = dataclasses.replace(opts, port=free_port(opts.host))
    out_dir = serve_dir(run_dir)
    gpu = detect_gpu()
    target = None
    if spec is None:
        target = resolve_target(run_dir, variant, model)
        chosen = resolve_stack(stack, target, gpu)
        checks = run_preflight(target, chosen, opts, force, out_dir, gpu)
        spec = build_spec(target, chosen, opts, run_dir, llama_server, vllm_python)
    else:
        checks = [preflight.port(spec.host, spec.port), preflight.disk(out_dir)]
        preflight.raise_on_failure(checks)
    label = name or spec.served_model_name
    for check in checks:
        say(f"pre-flight {check.name}: {check.status} ({check.detail})")
    logs = out_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    for key in ("TMPDIR", "VLLM_CACHE_ROOT"):
        if key in spec.env:
            Path(spec.env[key]).mkdir(parents=True, exist_ok=True)
    log_path = logs / f"{label}-{time.strftime('%Y%m%dT%H%M%S')}.log"
    record_path = out_dir / f"{label}.json"
    _refuse_live_record(record_path)
    say(f"starting {spec.stack}: {spec.shell_line()}")
    with open(log_path, "ab") as log:
        for check in checks:
            log.write(f"# pre-flight {check.name}: {check.status} ({check.detail})\n".encode())
        log.write(f"$ {spec.shell_line()}\n".encode())
        log.flush()
        process = subprocess.Popen(
            spec.argv,
            env={**os.environ, **spec.env},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    record = {
        "name": label,
        "status": "starting",
        "stack": spec.stack,
        "pid": process.pid,
        "pgid": process.pid,
        "url": spec.url,
        "base_url": f"{spec.url}/v1",
        "served_model_name": spec.served_model_name,
        "command": spec.argv,
        "env": spec.env,
        "log": str(log_path),
        "started_at": _now(),
        "target": _target_info(target),
        "forced": any(c.status == "forced" for c in checks),
        "preflight": [c.as_dict() for c in checks],
        "greedy_extra": spec.greedy_extra,
    }
    _write_record(record_path, record)
    server = RunningServer(spec, process, process.pid, log_path, record_path, record)
    try:
        _become_ready(server, ready_timeout_s, probe, say)
        _served_gate(server, target, say)
    except BaseException:
        server.stop(grace_s=10.0)
        raise
    return server


def run_preflight(
    target: ServeTarget, stack: str, opts: ServeOptions, force: bool, out_dir: Path, gpu: dict | None
) -> list[preflight.Check]:
    gpu = gpu if stacks.STACKS[stack].device == "gpu" else None  # the GPU it runs on, if any
    checks = [preflight.verdict(target, force), preflight.port(opts.host, opts.port), preflight.disk(out_dir)]
    preflight.raise_on_failure(checks)
    checks.append(preflight.compatibility(target, stack, gpu))
    checks.append(preflight.memory(target, stack, opts, gpu))
    preflight.raise_on_failure(checks)
    checks.append(preflight.hashes(target))
    preflight.raise_on_failure(checks)
    return checks


def _served_gate(server: RunningServer, target: ServeTarget | None, say: Say) -> None:
    """A vLLM server of a validated variant is scored like the gate scored it in-process; one that fails is stopped."""
    if target is None or target.variant is None or target.run_dir is None:
        return
    unscored = stacks.STACKS[server.spec.stack].no_served_gate
    if unscored is not None:
        say(f"served-engine validation: {unscored}")
        return
    from quantship.progress import stderr_console
    from quantship.rundir import RunDir
    from quantship.validate.served_gate import gate_running_server
    from quantship.validate.verdicts import verdict_path

    say(f"served-engine validation of {target.variant} on the baseline's windows")
    run_dir = RunDir(target.run_dir)
    result = gate_running_server(run_dir, target.variant, server.url, server.spec.served_model_name, stderr_console())
    if result is None:
        say("served-engine validation skipped: no verdict or baseline to compare with")
        return
    served = {k: v["value"] for k, v in result["checks"].items() if k.startswith("served:")}
    server.record["served_validation"] = {"passed": result["served"]["passed"], "checks": served}
    _write_record(server.record_path, server.record)
    say(
        "served-engine validation: " + ("PASS" if result["served"]["passed"] else "FAIL") + " "
        + " ".join(f"{k}={v:.4g}" for k, v in served.items() if v is not None)
    )
    if not result["served"]["passed"] and not server.record.get("forced"):
        failed = [n for n in result["failed_checks"] if n.startswith("served:")]
        raise GateFailed(
            f"the served engine fails the gate: {', '.join(failed)}",
            f"see {verdict_path(run_dir, target.variant)}; the server was stopped",
        )


def _become_ready(server: RunningServer, timeout_s: float, probe: bool, say: Say) -> None:
    spec = server.spec
    say(f"waiting for {spec.url} (log: {server.log_path})")
    try:
        waited = health.wait_ready(spec.url, spec.served_model_name, server.alive, timeout_s)
        say(f"ready after {waited:.1f} s; warming up")
        warm = health.warm_up(spec.url, spec.served_model_name, spec.greedy_extra)
        result = health.probe(spec.url, spec.served_model_name, spec.greedy_extra) if probe else None
    except health.NotReady as error:
        raise NotAvailable(
            f"{spec.stack} server did not become ready: {error}", f"see {server.log_path}: {_log_tail(server.log_path)}"
        ) from None
    if result is not None:
        say(f"probe {result.prompt!r} -> {result.text.strip()!r}")
        if not result.passed:
            server.record["probe"] = result.__dict__
            _write_record(server.record_path, server.record)
            raise GateFailed(
                f"probe failed: {result.prompt!r} -> {result.text.strip()!r} lacks {result.expected!r}",
                "the served weights are broken or not the model you meant; check the variant's validation",
            )
    server.record.update(
        status="ready",
        ready_after_s=round(waited, 1),
        warmup_requests=warm,
        probe=result.__dict__ if result else None,
        ready_at=_now(),
    )
    _write_record(server.record_path, server.record)


def live_servers(run_dir: Path | None) -> list[dict[str, Any]]:
    """Records of the servers of a run directory that are ready and still running."""
    live = []
    for path in sorted(serve_dir(run_dir).glob("*.json")):
        with contextlib.suppress(ValueError, OSError):
            record = read_json(path)
            if record.get("status") == "ready" and _is_recorded_process(record):
                live.append(record)
    return live


def stop_recorded(run_dir: Path | None, name: str | None = None, say: Say = _quiet) -> list[str]:
    """Stop servers recorded in the run directory (all live ones, or the one named)."""
    folder = serve_dir(run_dir)
    paths = [folder / f"{name}.json"] if name else sorted(folder.glob("*.json"))
    stopped = []
    for path in paths:
        try:
            record = read_json(path)
        except FileNotFoundError:
            raise InputError(f"no server record {path}", f"see `ls {folder}` for recorded servers") from None
        if record.get("status") not in ("starting", "ready") or not _is_recorded_process(record):
            continue
        code = _stop_group(record["pid"], None, 30.0)
        _remove_short_tmpdir(record.get("env") or {})
        _write_record(path, {**record, "status": "stopped", "exit_code": code, "stopped_at": _now()})
        say(f"stopped {record['name']} (pid {record['pid']}, {record['url']})")
        stopped.append(record["name"])
    return stopped


def free_port(host: str = "127.0.0.1") -> int:
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _stop_group(pid: int, process: subprocess.Popen | None, grace_s: float) -> int | None:
    """End the server's whole process group, politely first; no orphan survives."""
    members = _group_members(pid)
    for sig, wait_s in ((signal.SIGINT, grace_s), (signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
        members = [p for p in members if _alive(p)]
        _, members = psutil.wait_procs(members, timeout=wait_s)
        if process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=0 if not members else 1)
        if not members and (process is None or process.poll() is not None):
            break
    for leftover in members:  # a child that left the group: kill it by pid
        with contextlib.suppress(psutil.Error):
            leftover.kill()
    return process.poll() if process is not None else None


def _remove_short_tmpdir(env: dict[str, str]) -> None:
    """Remove the per-run temp folder outside the run directory (see launch.vllm_tmpdir)."""
    tmp = env.get("TMPDIR", "")
    if tmp and Path(tmp).name.startswith(launch.SHORT_TMP_PREFIX):
        shutil.rmtree(tmp, ignore_errors=True)


def _group_members(pid: int) -> list[psutil.Process]:
    members = []
    with contextlib.suppress(psutil.Error):
        root = psutil.Process(pid)
        members = [root, *root.children(recursive=True)]
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error, OSError):
            if os.getpgid(proc.pid) == pid and proc not in members:
                members.append(proc)
    return members


def _alive(proc: psutil.Process) -> bool:
    with contextlib.suppress(psutil.Error):
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    return False


def _pid_alive(pid: int) -> bool:
    with contextlib.suppress(psutil.Error):
        return _alive(psutil.Process(pid))
    return False


def _is_recorded_process(record: dict) -> bool:
    """The pid still runs the recorded command (pids get reused after a reboot)."""
    with contextlib.suppress(psutil.Error):
        proc = psutil.Process(record["pid"])
        return _alive(proc) and proc.cmdline() == record["command"]
    return False


def _refuse_live_record(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError, ValueError):
        record = read_json(path)
        if record.get("status") in ("starting", "ready") and _is_recorded_process(record):
            raise InputError(
                f"{record['name']} is already served at {record['url']} (pid {record['pid']})",
                "use it, or stop it first with `quantship serve --stop`",
            )


def _target_info(target: ServeTarget | None) -> dict | None:
    if target is None:
        return None
    return {
        "path": str(target.path),
        "format": target.artifact.label,
        "variant": target.variant,
        "quantization": target.artifact.vllm_quantization,
    }


def _log_tail(path: Path, lines: int = 3) -> str:
    with contextlib.suppress(OSError):
        text = path.read_text("utf-8", errors="replace").strip().splitlines()
        return " | ".join(line.strip() for line in text[-lines:])
    return "(no log)"


def _write_record(path: Path, record: dict) -> None:
    atomic_write_json(path, record)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
