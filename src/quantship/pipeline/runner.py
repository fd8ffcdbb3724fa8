"""Run the stages of a pipeline.yaml in order: a loop over `quantship.stages`.

Each stage is `stages/<stage>.run(run_dir, options, context)` with its section of the
pipeline as its options, the same call its CLI verb makes. Resuming is the stages' own
business (each keeps work whose fingerprint is current). A failing gate stops the run at
validate: no server is started for a variant that did not pass. `<run>/pipeline.json`
records what each stage did, for people; nothing reads it to decide.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from quantship.errors import InputError, QuantshipError
from quantship.pipeline.config import PipelineConfig
from quantship.rundir import RunDir, atomic_write_json
from quantship.stages import STAGES, Context, stage
from quantship.stages.serve import Servers

STATE = "pipeline.json"
# pipeline.yaml key of each stage's options, where it is not the stage's name
SECTION = {"validate": "validate_"}


@dataclass
class StageReport:
    stage: str
    status: str  # ran | kept (unchanged) | off (not configured) | failed | not run
    detail: str = ""
    seconds: float = 0.0


@dataclass
class PipelineResult:
    run_dir: Path
    stages: list[StageReport] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)  # label -> path or name, from the stages' outcomes


def stage_range(start: str | None, until: str | None) -> list[str]:
    """STAGES from `start` through `until`, both optional; an unknown or reversed pair is refused."""
    for given in (start, until):
        if given is not None and given not in STAGES:
            raise InputError(f"unknown stage {given!r}", f"use one of: {', '.join(STAGES)}")
    first = STAGES.index(start) if start else 0
    last = STAGES.index(until) if until else len(STAGES) - 1
    if first > last:
        raise InputError(f"--from {start} comes after --until {until}", f"stages run in this order: {', '.join(STAGES)}")
    return list(STAGES[first : last + 1])


class Pipeline:
    def __init__(self, config: PipelineConfig, base: Path, console: Console, force: bool = False):
        self.config = config
        self.run = RunDir(config.resolved_run_dir(base))
        self.result = PipelineResult(self.run.root)
        self.context = Context(
            console=console, name=config.name, model=config.model, base=base, force=force,
            variants=[v.name for v in config.quantize.variants], servers=Servers(config.serve, console),
        )

    def options(self, name: str) -> Any:
        return getattr(self.config, SECTION.get(name, name))

    def execute(self, stages: list[str]) -> PipelineResult:
        if any(getattr(stage(name), "READS_CHECKPOINT", False) for name in stages):
            self.context.checkpoint  # noqa: B018 -- resolving it fails on a wrong model path here, before anything is written
        state = {"config": self.config.model_dump(mode="json", by_alias=True), "stages": {}}
        ok = False
        try:
            for index, name in enumerate(STAGES):
                if name not in stages:
                    self.result.stages.append(StageReport(name, "not run", "outside --from/--until"))
                    continue
                report = self._run_one(name, [s for s in STAGES[index + 1 :] if s in stages], stages)
                self.result.stages.append(report)
                state["stages"][name] = {**asdict(report), "finished_at": _now()}
                atomic_write_json(self.run.root / STATE, state)
            ok = True
        finally:
            self.context.servers.stop(self.run, keep=ok and self.config.serve.keep_running)
        return self.result

    def _run_one(self, name: str, later: list[str], stages: list[str]) -> StageReport:
        started = time.time()
        self.context.servers_needed_later = lambda: self._servers_needed(later)
        try:
            outcome = stage(name).run(self.run, self.options(name), self.context)
        except BaseException as error:
            detail = error.one_line() if isinstance(error, QuantshipError) else f"{type(error).__name__}: {error}"
            self.result.stages.append(StageReport(name, "failed", detail, time.time() - started))
            for rest in STAGES[STAGES.index(name) + 1 :]:
                why = f"stopped at {name}" if rest in stages else "outside --from/--until"
                self.result.stages.append(StageReport(rest, "not run", why))
            raise
        self.result.outputs.update(outcome.outputs)
        return StageReport(name, outcome.status, outcome.detail, time.time() - started)

    def _servers_needed(self, later: list[str]) -> bool:
        """Whether a stage still to run will use the servers (bench not current, rollout on)."""
        for name in later:
            module = stage(name)
            if hasattr(module, "needs_servers") and module.needs_servers(self.run, self.options(name), self.context):
                return True
        return False


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
