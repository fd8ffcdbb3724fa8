"""Process lifecycle against a real HTTP server (the OpenAI stub) started as serve would.

The stub stands in for vLLM only here, where the subject is quantship's own part:
readiness, warm-up, probe, the record file, --stop and leaving no process behind.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import psutil
import pytest

from quantship.errors import GateFailed, InputError, NotAvailable
from quantship.serve.launch import LaunchSpec
from quantship.serve.server import (
    _group_members,
    live_servers,
    planned_tensor_parallel,
    resolve_stack,
    start_server,
    stop_recorded,
)
from quantship.serve.target import from_model_path
from tests.support.openai_stub import free_port
from tests.support.serve_files import write_checkpoint, write_gguf

STUB = str(Path(__file__).parents[1] / "support" / "openai_stub.py")


def stub_spec(mode: str = "normal", wrapper: str | None = None) -> LaunchSpec:
    port = free_port()
    args = [STUB, "--port", str(port), "--mode", mode, "--behaviour", json.dumps({"model": "demo"})]
    if wrapper is None:
        argv = [sys.executable, *args]
    else:  # run the stub in-process after the wrapper code, e.g. one that spawns a child
        code = f"{wrapper}\nimport runpy, sys\nsys.argv = {args!r}\nrunpy.run_path({STUB!r}, run_name='__main__')"
        argv = [sys.executable, "-c", code]
    return LaunchSpec("stub", argv, {}, "demo", "127.0.0.1", port)


def gone(procs: list[psutil.Process]) -> bool:
    return all(not p.is_running() or p.status() == psutil.STATUS_ZOMBIE for p in procs)


def test_ready_server_is_probed_recorded_and_stopped(tmp_path):
    lines = []
    server = start_server(spec=stub_spec(), run_dir=tmp_path, say=lines.append)
    with server:
        record = json.loads(server.record_path.read_text())
        assert record["status"] == "ready" and record["pid"] == server.pid
        assert record["probe"]["passed"] and "Paris" in record["probe"]["text"]
        assert record["warmup_requests"] == 2 and record["url"] == server.url
        assert record["command"] == server.spec.argv and Path(record["log"]) == server.log_path
        assert server.base_url == f"{server.url}/v1" and server.alive()
        assert server.record_path == tmp_path / "serve" / "demo.json"
        assert "# pre-flight port: ok" in server.log_path.read_text()
    assert not server.alive()
    assert json.loads(server.record_path.read_text())["status"] == "stopped"
    assert any("probe" in line for line in lines)


def test_wrong_answer_fails_the_probe_and_stops_the_server(tmp_path):
    with pytest.raises(GateFailed, match="lacks 'Paris'") as caught:
        start_server(spec=stub_spec("refuse"), run_dir=tmp_path)
    record = json.loads((tmp_path / "serve" / "demo.json").read_text())
    assert record["status"] == "stopped" and record["probe"]["passed"] is False
    assert not psutil.pid_exists(record["pid"]) or psutil.Process(record["pid"]).status() == psutil.STATUS_ZOMBIE
    assert "check the variant" in caught.value.fix


def test_server_that_dies_while_loading_is_reported_with_its_log(tmp_path):
    port = free_port()
    spec = LaunchSpec(
        "stub",
        [sys.executable, "-c", "print('CUDA out of memory'); raise SystemExit(3)"],
        {},
        "demo",
        "127.0.0.1",
        port,
    )
    with pytest.raises(NotAvailable, match="exited while loading") as caught:
        start_server(spec=spec, run_dir=tmp_path, ready_timeout_s=60)
    assert "CUDA out of memory" in caught.value.fix


def test_stop_ends_children_of_the_server_too(tmp_path):
    wrapper = "import subprocess, sys\nsubprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])"
    server = start_server(spec=stub_spec(wrapper=wrapper), run_dir=tmp_path)
    members = _group_members(server.pid)
    assert len(members) >= 2
    server.stop()
    assert gone(members)


def test_detached_server_is_found_and_stopped_through_its_record(tmp_path):
    server = start_server(spec=stub_spec(), run_dir=tmp_path)
    members = _group_members(server.pid)
    with pytest.raises(InputError, match="already served"):
        start_server(spec=stub_spec(), run_dir=tmp_path)
    assert [(r["name"], r["url"]) for r in live_servers(tmp_path)] == [("demo", server.url)]
    assert stop_recorded(tmp_path) == ["demo"]
    assert live_servers(tmp_path) == []
    assert gone(members)
    assert stop_recorded(tmp_path) == []  # nothing live left
    server.process.wait(timeout=10)


def test_record_whose_pid_runs_something_else_is_not_killed(tmp_path):
    folder = tmp_path / "serve"
    folder.mkdir()
    me = psutil.Process(os.getpid())
    record = {"name": "old", "status": "ready", "pid": me.pid, "command": ["not", "this"], "url": "x"}
    (folder / "old.json").write_text(json.dumps(record))
    assert stop_recorded(tmp_path) == [] and me.is_running()


def test_stop_of_unknown_name_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="no server record"):
        stop_recorded(tmp_path, "ghost")


def test_stack_resolution(tmp_path):
    ckpt = from_model_path(write_checkpoint(tmp_path / "m"))
    gguf = from_model_path(write_gguf(tmp_path / "m.gguf"))
    gpu = {"name": "H100", "compute_capability": 9.0}
    assert resolve_stack("auto", gguf, None) == "llama.cpp"
    assert resolve_stack("auto", ckpt, None) == "vllm-cpu"
    assert resolve_stack("auto", ckpt, gpu) == "vllm"
    assert resolve_stack("llamacpp", gguf, None) == "llama.cpp"
    with pytest.raises(InputError, match="needs an NVIDIA GPU"):
        resolve_stack("vllm", ckpt, None)
    assert resolve_stack("vllm", ckpt, None, need_gpu=False) == "vllm"
    with pytest.raises(InputError, match="unknown serving stack"):
        resolve_stack("tgi", ckpt, None)


def test_tensor_parallel_comes_from_the_plan(tmp_path):
    """A bf16 70B on H100s needs several GPUs per replica: serve takes the planner's size, 1 without a plan."""
    from quantship.plan.api import PlanArgs, plan_from_args, write_plan
    from quantship.rundir import RunDir
    from tests.support.model_configs import LLAMA3_70B

    run = tmp_path / "run"
    assert planned_tensor_parallel(run) == 1
    (tmp_path / "config.json").write_text(json.dumps(LLAMA3_70B))
    args = PlanArgs(model=tmp_path / "config.json", hardware="h100", context=8192, concurrency=32, devices=8, format="bf16")
    result = plan_from_args(args)
    write_plan(RunDir(run), args, result)
    assert planned_tensor_parallel(run) == result.plan.chosen.fit.tensor_parallel > 1
