"""One home for everything shared across runs, moved by one variable (CI builds in a fresh one)."""

from __future__ import annotations

import re
from pathlib import Path

from quantship.envs import llamacpp, vllm_cpu
from quantship.home import quantship_home
from quantship.models import demo
from quantship.serve.server import serve_dir

SRC = Path(__file__).resolve().parents[1] / "src" / "quantship"


def test_every_shared_path_follows_quantship_home(tmp_path, monkeypatch):
    monkeypatch.setenv("QUANTSHIP_HOME", str(tmp_path / "ci-home"))
    monkeypatch.setenv("QUANTSHIP_CACHE", str(tmp_path / "older"))  # the new name wins
    shared = [llamacpp.env_dir(), llamacpp.log_path(), vllm_cpu.env_dir(), vllm_cpu.env_python(),
              vllm_cpu.log_path(), demo.default_cache_dir(), serve_dir(None)]
    assert [p for p in shared if not p.is_relative_to(tmp_path / "ci-home")] == []


def test_a_relative_home_is_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("QUANTSHIP_HOME", "rel/home")
    assert quantship_home() == tmp_path / "rel" / "home"


def test_without_a_variable_the_home_is_the_user_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("QUANTSHIP_HOME", raising=False)
    monkeypatch.delenv("QUANTSHIP_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert quantship_home() == tmp_path / ".cache" / "quantship"


def test_no_other_module_finds_its_own_way_to_the_user_cache():
    pattern = re.compile(r"Path\.home\(\)|[\"']~/|\.cache/quantship[\"']")
    offenders = [str(p.relative_to(SRC)) for p in SRC.rglob("*.py")
                 if p.name != "home.py" and pattern.search(p.read_text(encoding="utf-8"))]
    assert offenders == []
