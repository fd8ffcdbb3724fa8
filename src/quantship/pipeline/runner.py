"""Run the stages of a pipeline.yaml in order, each through the same code as its CLI verb.

Resuming is the stages' own business: baseline, calibrate, quantize and validate skip
work whose inputs and options are unchanged. Serve and bench have no lasting output
to compare, so the runner keeps a key per finished stage in `<run>/pipeline.json` and
skips both when the selected variant, the baseline and their settings are unchanged.
A failing gate stops the run at validate: no server is started for a variant that
did not pass.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from quantship.errors import GateFailed, InputError, QuantshipError
from quantship.pipeline.config import STAGES, PipelineConfig
from quantship.pipeline.model_source import resolve_model
from quantship.rundir import RunDir, atomic_write_json, atomic_write_text, read_json, sha256_json

STATE = "pipeline.json"
BENCH_TAG = "pipeline"


@dataclass
class StageReport:
    stage: str
    status: str  # ran | kept (unchanged) | off (not configured) | failed | not run
    detail: str = ""
    seconds: float = 0.0
    key: str | None = None  # serve/bench: what they were run for, to skip them when unchanged


@dataclass
class PipelineResult:
    run_dir: Path
    stages: list[StageReport] = field(default_factory=list)
    selected: str | None = None
    report: Path | None = None
    bench: Path | None = None
    model_card: Path | None = None
    rollout: Path | None = None


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
        self.base = base
        self.console = console
        self.force = force
        self.run = RunDir(config.resolved_run_dir(base))
        self.result = PipelineResult(self.run.root)
        self._checkpoint: Path | None = None
        self._servers: dict[str, Any] = {}
        self._state_path = self.run.root / STATE

    # -- driving ---------------------------------------------------------------------

    def execute(self, stages: list[str]) -> PipelineResult:
        if {"plan", "baseline"} & set(stages):
            self.checkpoint  # noqa: B018 -- resolving it fails on a wrong model path here, before anything is written
        state = self._load_state()
        ok = False
        try:
            for stage in STAGES:
                if stage not in stages:
                    self.result.stages.append(StageReport(stage, "not run", "outside --from/--until"))
                    continue
                started = time.time()
                try:
                    report = getattr(self, f"_{stage}")(state)
                except BaseException as error:
                    detail = error.one_line() if isinstance(error, QuantshipError) else f"{type(error).__name__}: {error}"
                    self.result.stages.append(StageReport(stage, "failed", detail, time.time() - started))
                    self._mark_rest(stages, stage)
                    raise
                report.seconds = time.time() - started
                self.result.stages.append(report)
                state["stages"][stage] = {**asdict(report), "finished_at": _now()}
                atomic_write_json(self._state_path, state)
            ok = True
        finally:
            self._stop_servers(keep=ok and self.config.serve.keep_running)
        return self.result

    def _mark_rest(self, stages: list[str], failed: str) -> None:
        for stage in STAGES[STAGES.index(failed) + 1 :]:
            self.result.stages.append(
                StageReport(stage, "not run", f"stopped at {failed}" if stage in stages else "outside --from/--until")
            )

    def _load_state(self) -> dict[str, Any]:
        try:
            state = read_json(self._state_path)
        except (FileNotFoundError, ValueError):
            state = {}
        state.setdefault("stages", {})
        state["config"] = self.config.model_dump(mode="json", by_alias=True)
        return state

    @property
    def checkpoint(self) -> Path:
        if self._checkpoint is None:
            self._checkpoint = resolve_model(self.config.model, self.base)
        return self._checkpoint

    # -- stages ----------------------------------------------------------------------

    def _plan(self, state: dict) -> StageReport:
        section = self.config.plan
        if section is None:
            return StageReport("plan", "off", "no plan: section")
        from quantship.plan import api

        request = section.args(self.checkpoint)
        result = api.plan_from_args(request)
        written = api.write_plan(self.run, request, result)
        chosen = result.plan.chosen
        fit = chosen.fit
        tp = f", tensor parallel {fit.tensor_parallel}" if fit is not None and getattr(fit, "tensor_parallel", None) else ""
        return StageReport("plan", "ran" if written else "kept", f"{chosen.format} on {chosen.stack} ({chosen.status}){tp}")

    def _baseline(self, state: dict) -> StageReport:
        from quantship.evaluate.baseline import run_baseline

        result, skipped = run_baseline(self.checkpoint, self.run, self.config.baseline, self.console, force=self.force)
        ppl, probes = result["perplexity"], result["probes"]
        return StageReport(
            "baseline", "kept" if skipped else "ran",
            f"perplexity {ppl['value']:.3f} on {ppl['tokens_scored']:,} tokens; probes {probes['passed']}/{probes['total']}",
        )

    def _calibrate(self, state: dict) -> StageReport:
        from quantship.evaluate.baseline import baseline_checkpoint
        from quantship.stages.calibrate import run_calibrate

        stats, skipped = run_calibrate(baseline_checkpoint(self.run), self.run, self.config.calibrate, self.console, force=self.force)
        return StageReport(
            "calibrate", "kept" if skipped else "ran",
            f"{stats['samples']} x {stats['seq_len']} tokens from {stats['source']}, vocabulary coverage {stats['vocab_coverage']:.1%}",
        )

    def _quantize(self, state: dict) -> StageReport:
        from quantship.quantize.stage import run_quantize

        section = self.config.quantize
        results = run_quantize(self.run, section.variants, self.console, force=self.force, keep_going=section.keep_going)
        made = [r for r in results if r.ok]
        missing = [f"{r.name} ({r.status})" for r in results if not r.ok]
        if not made:
            raise QuantshipError("no variant was produced: " + ", ".join(missing), "see the quantize table above")
        sizes = ", ".join(f"{r.name} {r.bits_per_weight:.2f} bpw" if r.bits_per_weight else r.name for r in made)
        status = "kept" if all(r.status == "skipped" for r in made) else "ran"
        return StageReport("quantize", status, sizes + (f"; not produced: {', '.join(missing)}" if missing else ""))

    def _validate(self, state: dict) -> StageReport:
        from quantship.quantize.stage import completed_variants
        from quantship.validate.stage import run_validate

        section = self.config.validate_
        names = [v.name for v in self.config.quantize.variants if v.name in set(completed_variants(self.run))]
        started = _now()
        outcome = run_validate(
            self.run, names, section.thresholds, section.measuring(), self.console, section.recover, section.select, self.force
        )
        self.result.report = outcome.report
        selection = outcome.selection or {}
        verdicts = ", ".join(f"{r['variant']} {'pass' if r['passed'] else 'FAIL'}" for r in outcome.results)
        if not selection.get("selected"):
            failing = "; ".join(f"{r['variant']}: {', '.join(r['failed_checks'])}" for r in outcome.results)
            raise GateFailed(f"gate failed, no variant passed ({failing})", f"nothing was served; see {outcome.report}")
        self.result.selected = selection["selected"]
        self.result.model_card = self.run.stage_dir(f"variants/{self.result.selected}") / "README.md"
        measured = any(r["validated_at"] >= started for r in outcome.results)
        return StageReport("validate", "ran" if measured else "kept", f"{verdicts}; selected {selection['selected']}")

    def _serve_key(self) -> str:
        from quantship.serve.server import selected_variant

        variant = selected_variant(self.run.root)
        return sha256_json({
            "variant": (self.run.manifest(f"variants/{variant}") or {}).get("fingerprint"),
            "baseline": (self.run.manifest("baseline") or {}).get("fingerprint"),
            "serve": self.config.model_dump(mode="json")["serve"],
        })

    def _bench_key(self) -> str:
        return sha256_json({"serve": self._serve_key(), "bench": self.config.bench.model_dump(mode="json")})

    def _unchanged(self, state: dict, stage: str, key: str) -> bool:
        recorded = state["stages"].get(stage, {})
        return (
            not self.force and not self.config.serve.keep_running
            and recorded.get("key") == key and recorded.get("status") in ("ran", "kept")
        )

    def _bench_current(self, state: dict) -> bool:
        """The recorded bench measured this variant, baseline and settings, and its folder is there."""
        return self._unchanged(state, "bench", self._bench_key()) and self.run.manifest(f"bench/{BENCH_TAG}") is not None

    def _serve(self, state: dict) -> StageReport:
        if not self.config.serve.enabled:
            return StageReport("serve", "off", "serve.enabled is false")
        key = self._serve_key()
        bench_done = not self.config.bench.enabled or self._bench_current(state)
        if self._unchanged(state, "serve", key) and bench_done:
            report = StageReport("serve", "kept", f"unchanged since {state['stages']['serve'].get('finished_at')}")
        else:
            servers = self._ensure_servers()
            report = StageReport("serve", "ran", "; ".join(f"{label}: {s.spec.stack} at {s.base_url}" for label, s in servers.items()))
        report.key = key
        return report

    def _bench(self, state: dict) -> StageReport:
        if not self.config.bench.enabled:
            return StageReport("bench", "off", "bench.enabled is false")
        key = self._bench_key()
        folder = self.run.stage_dir(f"bench/{BENCH_TAG}")
        if self._bench_current(state):
            self.result.bench = folder
            previous = state["stages"]["bench"]
            report = StageReport("bench", "kept", f"{previous.get('detail', '')} (measured {previous.get('finished_at')})")
        else:
            report = self._run_bench()
        report.key = key
        return report

    def _rollout(self, state: dict) -> StageReport:
        section = self.config.rollout
        if section is None or not section.enabled:
            return StageReport("rollout", "off", "no rollout: section")
        import yaml

        servers = self._ensure_servers()
        (control_label, control), (variant, treatment) = servers.items()
        config = rollout_config(self.config.name, variant, control, treatment, self.run.root, section.settings)
        path = self.run.root / "rollout" / "rollout.yaml"
        atomic_write_text(path, yaml.safe_dump(config, sort_keys=False))
        self.result.rollout = path
        return StageReport("rollout", "ran", f"start the canary gateway: quantship rollout serve --config {path}")

    # -- servers and bench -----------------------------------------------------------

    def _ensure_servers(self) -> dict[str, Any]:
        """Baseline checkpoint and selected variant, each ready and probed (started once per run)."""
        if self._servers:
            return self._servers
        from quantship.evaluate.baseline import baseline_checkpoint
        from quantship.serve.server import planned_tensor_parallel, selected_variant, start_server

        section = self.config.serve
        variant = selected_variant(self.run.root)
        # As on the CLI, a size left at its default gives way to the plan's.
        tensor_parallel = section.tensor_parallel if section.tensor_parallel > 1 else planned_tensor_parallel(self.run.root)
        common = {"run_dir": self.run.root, "llama_server": section.llama_server, "vllm_python": section.vllm_python,
                  "ready_timeout_s": section.ready_timeout_s, "say": self.console.print}
        self._servers["baseline"] = start_server(
            model=baseline_checkpoint(self.run), stack=section.baseline_stack, name="baseline",
            options=section.options(section.baseline_stack, tensor_parallel), **common,
        )
        self._servers[variant] = start_server(
            variant=variant, stack=section.stack, options=section.options(section.stack, tensor_parallel), **common
        )
        return self._servers

    def _stop_servers(self, keep: bool) -> None:
        if keep and self._servers:
            self.console.print(f"servers left running; stop them with `quantship serve --stop --run-dir {self.run.root}`")
            return
        for server in self._servers.values():
            server.stop()
        self._servers.clear()

    def _run_bench(self) -> StageReport:
        from quantship.bench.output import bench_into_run_dir
        from quantship.bench.progress import RichProgress
        from quantship.bench.prompts import load_prompts
        from quantship.bench.targets import resolve_target

        section = self.config.bench
        servers = self._ensure_servers()
        targets = [
            resolve_target(server.base_url, server.served_model_name, section.api, label)
            for label, server in servers.items()
        ]
        prompts = load_prompts(section.prompts)
        settings = section.settings(len(prompts))
        with RichProgress(self.console) as progress:
            report, folder = bench_into_run_dir(self.run, BENCH_TAG, targets, prompts, settings, progress, section.server_metrics)
        self.result.bench = folder
        dead = [s for s in report.summaries if s.ok == 0]
        if dead:
            raise QuantshipError(
                f"every request to {dead[0].endpoint} at {dead[0].mode} {dead[0].level:g} failed",
                f"see the server logs under {self.run.root / 'serve' / 'logs'}",
            )
        return StageReport("bench", "ran", _throughput_line(report))


def rollout_config(name: str, variant: str, control, treatment, run_root: Path, settings: dict[str, Any]) -> dict[str, Any]:
    """rollout.yaml for a gateway in front of the baseline (control) and the selected variant (treatment)."""
    from quantship.rollout.config import RolloutConfig

    config = {
        "experiment": f"{name}-{variant}",
        "control": {"url": control.base_url, "model": control.served_model_name},
        "treatment": {"url": treatment.base_url, "model": treatment.served_model_name},
        "store": f"sqlite:///{(run_root / 'rollout' / 'state.db').absolute()}",
        **settings,
    }
    return RolloutConfig.model_validate(config).model_dump(mode="json")


def _throughput_line(report) -> str:
    """Output tokens/s of each endpoint at the highest level, and the variant/baseline ratio."""
    top = max(s.level for s in report.summaries)
    rates = {s.endpoint: s.output_tokens_per_s for s in report.summaries if s.level == top}
    text = ", ".join(f"{name} {rate:.1f} tok/s" for name, rate in rates.items())
    values = list(rates.values())
    if len(values) == 2 and values[0] > 0:
        text += f" (x{values[1] / values[0]:.2f})"
    return f"{report.summaries[0].mode} {top:g}: {text}"


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
