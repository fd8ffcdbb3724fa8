"""The `quantship` command as a user runs it (a fresh interpreter), or in process (fast, monkeypatchable)."""

from __future__ import annotations

import subprocess
import sys


def quantship(*args: str, cwd=None, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "quantship", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=3600
    )


def in_process(monkeypatch, capsys, *argv: str) -> tuple[int, str, str]:
    """`quantship ARGV` in this interpreter: (exit code, stdout, stderr)."""
    from quantship.cli import main

    monkeypatch.setattr(sys, "argv", ["quantship", *argv])
    try:
        main()
        code = 0
    except SystemExit as done:
        code = done.code
    out, err = capsys.readouterr()
    return code, out, err
