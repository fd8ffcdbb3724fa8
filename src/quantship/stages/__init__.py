"""One shape for every stage of a run: `stages/<stage>.py`.

Each stage module has the same three names:

    Options                      the options model: CLI flags, its pipeline.yaml section
                                 and the library read it (quantship.options)
    run(run, options, context)   do the stage's work into the run directory -> Outcome;
                                 work whose inputs are unchanged (the fingerprint in its
                                 output's manifest, or in its verdicts) is kept, not redone
    load(run)                    read back what the stage wrote, refusing stale outputs

and, for stages that talk to the servers, `needs_servers(run, options, context)`; a stage
that reads the model checkpoint says `READS_CHECKPOINT = True`.
The domain packages (plan/, evaluate/, data/, quantize/, validate/, serve/, bench/,
rollout/) are the implementation; a stage module only composes them. `quantship run`
(quantship.pipeline.runner) is a loop over `STAGES`; the CLI verbs call the same `run`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal

from rich.console import Console

if TYPE_CHECKING:
    from quantship.stages.serve import Servers

STAGES = ("plan", "baseline", "calibrate", "quantize", "validate", "serve", "bench", "rollout")
Status = Literal["ran", "kept", "off"]


@dataclass
class Outcome:
    """What a stage did, in one line, and where its outputs are for a person to open."""

    status: Status
    detail: str
    outputs: dict[str, Any] = field(default_factory=dict)  # label -> path or name (report, selected, ...)
    result: Any = None  # the stage's own result, for a CLI verb that prints more than the line


@dataclass
class Context:
    """What every stage of one run shares: the console, --force, the model and the run's servers."""

    console: Console
    name: str = "run"  # the run's name (pipeline.yaml's name:), e.g. in the rollout experiment's name
    model: str | None = None  # pipeline.yaml's model: a checkpoint folder, `demo` or hf:ORG/NAME
    base: Path = Path(".")  # relative model paths resolve against it
    force: bool = False
    variants: list[str] | None = None  # the run's variant names (quantize's options); None: all completed
    servers: Servers | None = None  # the baseline and selected-variant servers, started once when a stage needs them
    servers_needed_later: Callable[[], bool] = lambda: False  # whether a stage still to run will use them
    _checkpoint: Path | None = None

    @property
    def checkpoint(self) -> Path:
        """The full-precision checkpoint folder the run starts from (resolved once: `demo` builds it)."""
        if self._checkpoint is None:
            from quantship.errors import InputError
            from quantship.models.source import resolve_model

            if self.model is None:
                raise InputError("this stage needs the model checkpoint", "pass --model PATH (or model: in pipeline.yaml)")
            self._checkpoint = resolve_model(self.model, self.base)
        return self._checkpoint


def stage(name: str) -> ModuleType:
    """The stage module `quantship.stages.<name>` (imported on use: most import torch)."""
    if name not in STAGES:
        from quantship.errors import InputError

        raise InputError(f"unknown stage {name!r}", f"use one of: {', '.join(STAGES)}")
    return importlib.import_module(f"quantship.stages.{name}")
