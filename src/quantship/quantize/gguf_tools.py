"""Run llama.cpp's converter, imatrix and quantizer as subprocesses, with logs and progress.

Each tool writes its full output to a log file in the variant folder (kept: the
record of what llama.cpp decided) while a rich bar follows the progress lines it
prints. A failing tool becomes a one-line error that points at its log.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from quantship.errors import InputError, QuantshipError

# llama-quantize: "[  12/ 272] blk.0.attn_k.weight - ..."; llama-imatrix (with ppl): "[12]9.8765,"
QUANTIZE_STEP = re.compile(r"\[\s*(\d+)/\s*(\d+)\]")
IMATRIX_STEP = re.compile(r"\[(\d+)\]\d")
LOW_DISK_BYTES = 64 << 20


class ToolFailed(QuantshipError):
    """A llama.cpp tool exited non-zero (exit 2: its log names the cause)."""


def run_tool(
    label: str,
    argv: list[str],
    log_file: Path,
    console: Console,
    step: re.Pattern[str] | None = None,
    total: int | None = None,
    env: dict[str, str] | None = None,
) -> str:
    """Run `argv`, tee its output into `log_file`, return the output; raise on failure."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    lines: list[str] = []
    with open(log_file, "w", encoding="utf-8") as log, Progress(*columns, console=console, transient=True) as bar:
        log.write(f"$ {' '.join(argv)}\n")
        task = bar.add_task(label, total=total)
        with subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace", env=env
        ) as proc:
            for line in proc.stdout:
                log.write(line)
                lines.append(line)
                if step is not None:
                    for match in step.finditer(line):
                        done = int(match[1])
                        bar.update(task, completed=done, total=int(match[2]) if match.re.groups > 1 else total)
    output = "".join(lines)
    if proc.returncode != 0:
        _raise_failure(label, proc.returncode, output, log_file)
    console.print(f"[green]done[/green] {label}")
    return output


def _raise_failure(label: str, code: int, output: str, log_file: Path) -> None:
    free = shutil.disk_usage(log_file.parent).free
    if free < LOW_DISK_BYTES or "No space left on device" in output:
        raise InputError(
            f"{label} ran out of disk space in {log_file.parent} ({free >> 20} MiB free)",
            "free disk space or put the run directory on a bigger disk, then rerun",
        )
    last = next((line.strip() for line in reversed(output.splitlines()) if line.strip()), "no output")
    raise ToolFailed(f"{label} failed (exit {code}): {last[:200]}", f"see {log_file}")
