"""The serve stage: the selected variant and, as the control, the baseline checkpoint, each ready and probed.

The servers belong to the run (`Servers`): started once, when the first stage needs them
(serve itself, bench when its measurement is not current, rollout), and stopped at the
end unless `keep_running`. Nothing lasting is written here but the server records, so
serve is kept when no later stage needs a server.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from quantship import layout
from quantship.layout import baseline_checkpoint
from quantship.options import ServeSection
from quantship.rundir import RunDir, sha256_json
from quantship.serve.server import RunningServer, live_servers, planned_tensor_parallel, start_server
from quantship.stages import Context, Outcome
from quantship.validate.verdicts import load_selection

if TYPE_CHECKING:
    from rich.console import Console

Options = ServeSection
CONTROL = "baseline"


@dataclass
class Servers:
    """The run's two servers, control first: {"baseline": ..., <variant>: ...}."""

    options: ServeSection
    console: Console
    started: dict[str, RunningServer] = field(default_factory=dict)

    def ensure(self, run_dir: RunDir) -> dict[str, RunningServer]:
        """Start both (once per run); the variant is the current selection, never a stale one."""
        if self.started:
            return self.started
        section = self.options
        variant = load_selection(run_dir)
        # As on the CLI, a size left at its default gives way to the plan's.
        tensor_parallel = section.tensor_parallel if section.tensor_parallel > 1 else planned_tensor_parallel(run_dir.root)
        common = {"run_dir": run_dir.root, "llama_server": section.llama_server, "vllm_python": section.vllm_python,
                  "ready_timeout_s": section.ready_timeout_s, "say": self.console.print}
        self.started[CONTROL] = start_server(
            model=baseline_checkpoint(run_dir), stack=section.baseline_stack, name=CONTROL,
            options=section.options(section.baseline_stack, tensor_parallel), **common,
        )
        self.started[variant] = start_server(
            variant=variant, stack=section.stack, options=section.options(section.stack, tensor_parallel), **common
        )
        return self.started

    def stop(self, run_dir: RunDir, keep: bool) -> None:
        if keep and self.started:
            self.console.print(f"servers left running; stop them with `quantship serve --stop --run-dir {run_dir.root}`")
            return
        for server in self.started.values():
            server.stop()
        self.started.clear()


def key(run_dir: RunDir, options: ServeSection) -> dict[str, str]:
    """What is served, as fingerprint inputs: the selected variant's and the baseline's fingerprints, the settings."""
    variant = load_selection(run_dir)
    return {
        "variant": str((run_dir.manifest(layout.variant(variant)) or {}).get("fingerprint")),
        "baseline": str((run_dir.manifest(layout.BASELINE) or {}).get("fingerprint")),
        "serve": sha256_json(asdict(options)),
    }


def run(run_dir: RunDir, options: ServeSection, context: Context) -> Outcome:
    """Start both servers unless nothing after serve needs them (then it is kept)."""
    if not options.enabled:
        return Outcome("off", "serve.enabled is false")
    if not (options.keep_running or context.force or context.servers_needed_later()):
        return Outcome("kept", f"serves {load_selection(run_dir)} when a stage needs it; nothing later does")
    servers = context.servers.ensure(run_dir)
    return Outcome("ran", "; ".join(f"{label}: {s.spec.stack} at {s.base_url}" for label, s in servers.items()))


def load(run_dir: RunDir) -> list[dict[str, Any]]:
    """The run's live servers' records (serve/<name>.json whose process is still the recorded one)."""
    return live_servers(run_dir.root)
