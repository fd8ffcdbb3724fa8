"""The `quantship` command run as a user runs it: a fresh interpreter, output captured."""

from __future__ import annotations

import subprocess
import sys


def quantship(*args: str, cwd=None, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "quantship", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=3600
    )
