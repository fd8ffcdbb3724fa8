"""`plan --measure`: serve and bench each format this machine can run, one at a time.

It serves the run's bf16 checkpoint and each variant whose format the matrix allows
here, with the real serving stack, benches each at fixed concurrency (16 x 64 tokens by
default), stops it, and reports tokens/s per format for the planner to rank by. Speed is
not a ship decision, so a variant is served without a passing validation verdict; the
report says so. It lives outside `plan/` so that the planner stays pure.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from quantship import layout
from quantship.bench.models import BenchSettings, Target
from quantship.bench.output import bench_into_run_dir
from quantship.bench.progress import RichProgress
from quantship.bench.prompts import BUILTIN, load_prompts
from quantship.errors import InputError, QuantshipError
from quantship.formats.hardware import HardwareProfile, detect_gpu
from quantship.formats.matrix import default_stack, load_matrix, support
from quantship.layout import baseline_checkpoint
from quantship.plan.measure import FormatMeasurement, MeasureReport, MeasureSettings, NotMeasured
from quantship.quantize.variants import completed_variants
from quantship.rundir import RunDir
from quantship.serve.launch import ServeOptions
from quantship.serve.server import build_spec, start_server
from quantship.serve.stacks import for_engine
from quantship.serve.target import ServeTarget, from_model_path, from_variant

Say = Callable[[str], None]


@dataclass(frozen=True)
class Pick:
    """One thing the run holds (the checkpoint or a variant) and whether it gets measured."""

    name: str
    variant: str | None
    artifact: Path
    format: str | None
    stack: str | None = None         # the serve stage's stack
    skip: str | None = None
    fix: str | None = None


def select(run_dir: Path, model_folder: Path, hardware: HardwareProfile) -> list[Pick]:
    """The checkpoint and every variant, each with its format and serve stack, or why it is skipped.

    One artifact per format is measured (the kernel, not the quantization method,
    sets the speed); the checkpoint comes first, then variants by name.
    """

    names = completed_variants(RunDir(run_dir))
    if not names:
        raise InputError(
            f"plan --measure needs quantized variants, and {Path(run_dir) / 'variants'} has none",
            f"run `quantship quantize --run-dir {run_dir} --variant ...` first, or pass --run-dir of a run that has them",
        )
    _check_same_model(run_dir, model_folder)
    picks = []
    checkpoint = from_model_path(model_folder)
    if checkpoint.artifact.format == "bf16":
        picks.append(_judge("checkpoint", None, checkpoint, run_dir, hardware))
    for name in names:
        try:
            target = from_variant(run_dir, name)
        except InputError as error:
            picks.append(Pick(name, name, Path(run_dir) / layout.variant(name), None, skip=error.problem, fix=error.fix))
            continue
        picks.append(_judge(name, name, target, run_dir, hardware))
    first: dict[str, str] = {}
    for index, pick in enumerate(picks):
        if pick.skip is not None:
            continue
        if pick.format in first:
            picks[index] = Pick(pick.name, pick.variant, pick.artifact, pick.format,
                                skip=f"{pick.format} is already measured with {first[pick.format]}")
        else:
            first[pick.format] = pick.name
    return picks


def _judge(name: str, variant: str | None, target: ServeTarget, run_dir: Path, hardware: HardwareProfile) -> Pick:

    fmt = target.artifact.format
    if fmt is None:
        scheme = "" if target.artifact.container == "gguf" else (target.manifest or {}).get("scheme") or ""
        return Pick(name, variant, target.path, None,
                    skip=f"{target.artifact.label} {scheme}".rstrip() + " is not a format of the plan's matrix",
                    fix=f"the plan measures {', '.join(load_matrix().formats)}")
    matrix_stack = default_stack(fmt)
    cell = support(fmt, matrix_stack, hardware)
    if cell.status == "refused":
        return Pick(name, variant, target.path, fmt, skip=f"{fmt} on {matrix_stack}: {cell.reason}")
    serving = for_engine(matrix_stack, hardware.kind)
    if serving is None:
        return Pick(name, variant, target.path, fmt,
                    skip=f"{fmt} runs on {matrix_stack}, which quantship does not serve", fix="plan it from priors")
    stack = serving.id
    try:  # the stack's environment: one line naming its setup command when it is missing
        build_spec(target, stack, ServeOptions(port=0), run_dir)
    except QuantshipError as error:
        return Pick(name, variant, target.path, fmt, stack, skip=error.problem, fix=error.fix)
    return Pick(name, variant, target.path, fmt, stack)


def _check_same_model(run_dir: Path, model_folder: Path) -> None:
    """Variants of another model would measure the wrong thing."""

    if RunDir(run_dir).manifest(layout.BASELINE) is None:
        return
    try:
        base = baseline_checkpoint(RunDir(run_dir))
    except (OSError, ValueError, KeyError):
        return
    if base.resolve() != Path(model_folder).resolve():
        raise InputError(
            f"the variants of {run_dir} were made from {base}, but --model is {model_folder}",
            f"pass --model {base}, or the --run-dir of {model_folder}'s variants",
        )


def check_this_machine(hardware: HardwareProfile, gpu: dict | None) -> None:
    """--measure benchmarks the machine it runs on, so --hardware must describe it."""
    if hardware.kind == "gpu" and gpu is None:
        raise InputError(
            f"plan --measure benchmarks this machine, which has no GPU, but --hardware is {hardware.name}",
            "pass --hardware cpu, or bench on that GPU and pass the figures with --measurements FILE",
        )


def measure_on_this_machine(
    run_dir: Path,
    model_folder: Path,
    hardware: HardwareProfile,
    settings: MeasureSettings | None = None,
    say: Say | None = None,
) -> MeasureReport:
    """Serve, bench and stop each selected format in turn; benches land in bench/measure-<format>."""

    settings = settings or MeasureSettings()
    say = say or _stderr
    check_this_machine(hardware, detect_gpu())
    picks = select(run_dir, model_folder, hardware)
    not_measured = [NotMeasured(name=p.name, format=p.format, reason=p.skip, fix=p.fix) for p in picks if p.skip]
    for skipped in not_measured:
        say(f"not measured: {skipped.name}: {skipped.reason}" + (f"; {skipped.fix}" if skipped.fix else ""))
    todo = [p for p in picks if p.skip is None]
    if not todo:
        first = not_measured[0]
        raise InputError(f"plan --measure found nothing it can serve here ({first.name}: {first.reason})",
                         first.fix or "quantize a variant in a format this machine serves (see `quantship plan`)")
    prompts = load_prompts(BUILTIN)
    bench = BenchSettings(
        mode="concurrency", levels=[float(settings.concurrency)], requests=settings.requests,
        warmup=settings.warmup, max_tokens=settings.max_tokens, ignore_eos=True, rounds=1, seed=0,
        timeout_s=settings.timeout_s, prompts=BUILTIN, prompt_count=len(prompts),
    )
    # The built-in prompts are short; the context covers them and the output.
    options = ServeOptions(port=0, max_model_len=settings.max_tokens + 256, parallel=settings.concurrency)
    rundir, measured = RunDir(run_dir), []
    for index, pick in enumerate(todo, 1):
        label = f"{pick.format} ({pick.name})"
        say(f"[{index}/{len(todo)}] measuring {label} on {pick.stack}: {settings.concurrency} concurrent x "
            f"{settings.max_tokens} tokens, {settings.requests} requests after {settings.warmup} warm-up")
        try:
            with start_server(
                run_dir=run_dir, variant=pick.variant, model=None if pick.variant else pick.artifact,
                stack=pick.stack, options=options, force=True, probe=False, name=f"measure-{pick.format}", say=say,
            ) as server:
                target = Target(label=pick.format, base_url=server.base_url, model=server.served_model_name,
                                api="completions")
                with RichProgress() as progress:
                    report, folder = bench_into_run_dir(rundir, f"measure-{pick.format}", [target], prompts, bench,
                                                        progress, server_metrics=False)
                verdict = next((c["status"] for c in server.record.get("preflight", []) if c["name"] == "verdict"),
                               "skipped")
                ready_after = server.record.get("ready_after_s")
        except QuantshipError as error:
            say(f"not measured: {label}: {error.one_line()}")
            not_measured.append(NotMeasured(name=pick.name, format=pick.format, reason=error.problem, fix=error.fix))
            continue
        summary = report.summaries[0]
        if summary.ok == 0:
            kinds = ", ".join(f"{k} x{n}" for k, n in summary.error_kinds.items())
            say(f"not measured: {label}: every request failed ({kinds})")
            not_measured.append(NotMeasured(name=pick.name, format=pick.format,
                                            reason=f"every request failed ({kinds})", fix=f"see {folder}"))
            continue
        rate = round(summary.output_tokens_per_s, 1)
        say(f"{label}: {rate:g} output tokens/s ({summary.ok}/{summary.requests} requests ok)")
        measured.append(FormatMeasurement(
            format=pick.format, stack=pick.stack, variant=pick.variant, artifact=str(pick.artifact),
            tokens_per_s=rate, requests=summary.requests, ok=summary.ok, output_tokens=summary.output_tokens,
            tpot_p50_ms=summary.tpot_ms.p50 if summary.tpot_ms else None,
            ttft_p50_ms=summary.ttft_ms.p50 if summary.ttft_ms else None,
            ready_after_s=ready_after, verdict=verdict, bench_summary=str(folder / "summary.json"),
        ))
    if not measured:
        first = not_measured[-1]
        raise InputError(f"plan --measure could not measure any format ({first.name}: {first.reason})",
                         first.fix or "see the server logs in the run's serve/logs")
    return MeasureReport(
        source=f"plan --measure on {hardware.name}: {settings.concurrency} concurrent x {settings.max_tokens} "
               f"tokens, {settings.requests} requests per format",
        tokens_per_s={m.format: m.tokens_per_s for m in measured},
        hardware=hardware.name,
        settings=settings,
        measured=measured,
        not_measured=not_measured,
    )


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
