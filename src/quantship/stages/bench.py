"""The bench stage: baseline vs selected variant side by side (ABBA), into bench/pipeline.

Kept, with no server started, when bench/pipeline's fingerprint (settings, labels, and
what was served: the variant's and baseline's fingerprints and the serve settings) is
the current one.
"""

from __future__ import annotations

from quantship import layout
from quantship.bench.models import BenchReport
from quantship.bench.output import SUMMARY, bench_into_run_dir, bench_params
from quantship.bench.progress import RichProgress
from quantship.bench.prompts import load_prompts
from quantship.bench.targets import resolve_target
from quantship.errors import QuantshipError
from quantship.options import BenchSection
from quantship.rundir import RunDir, read_json, stage_fingerprint
from quantship.stages import Context, Outcome
from quantship.stages import serve as serve_stage
from quantship.stages.serve import CONTROL

Options = BenchSection
TAG = "pipeline"
STAGE = layout.bench(TAG)


def _fingerprint(run_dir: RunDir, options: BenchSection, context: Context) -> str:
    labels = [CONTROL, serve_stage.load_selection(run_dir)]
    settings = options.settings(len(load_prompts(options.prompts)))
    return stage_fingerprint(STAGE, bench_params(labels, options.api, settings), serve_stage.key(run_dir, context.servers.options))


def needs_servers(run_dir: RunDir, options: BenchSection, context: Context) -> bool:
    return options.enabled and (context.force or not run_dir.is_current(STAGE, _fingerprint(run_dir, options, context)))


def run(run_dir: RunDir, options: BenchSection, context: Context) -> Outcome:
    if not options.enabled:
        return Outcome("off", "bench.enabled is false")
    folder = run_dir.stage_dir(STAGE)
    if not needs_servers(run_dir, options, context):
        return Outcome("kept", f"{throughput_line(load(run_dir))} (measured {run_dir.manifest(STAGE)['started_at']})",
                       {"bench": folder})
    servers = context.servers.ensure(run_dir)
    targets = [resolve_target(s.base_url, s.served_model_name, options.api, label) for label, s in servers.items()]
    prompts = load_prompts(options.prompts)
    with RichProgress(context.console) as progress:
        report, folder = bench_into_run_dir(
            run_dir, TAG, targets, prompts, options.settings(len(prompts)), progress, options.server_metrics,
            serve_stage.key(run_dir, context.servers.options),
        )
    if dead := [s for s in report.summaries if s.ok == 0]:
        raise QuantshipError(
            f"every request to {dead[0].endpoint} at {dead[0].mode} {dead[0].level:g} failed",
            f"see the server logs under {run_dir.root / layout.SERVE / 'logs'}",
        )
    return Outcome("ran", throughput_line(report), {"bench": folder}, report)


def load(run_dir: RunDir) -> BenchReport:
    folder = run_dir.require(STAGE, "quantship run")
    return BenchReport.model_validate(read_json(folder / SUMMARY))


def throughput_line(report: BenchReport) -> str:
    """Output tokens/s of each endpoint at the highest level, and the variant/baseline ratio."""
    top = max(s.level for s in report.summaries)
    rates = {s.endpoint: s.output_tokens_per_s for s in report.summaries if s.level == top}
    text = ", ".join(f"{name} {rate:.1f} tok/s" for name, rate in rates.items())
    values = list(rates.values())
    if len(values) == 2 and values[0] > 0:
        text += f" (x{values[1] / values[0]:.2f})"
    return f"{report.summaries[0].mode} {top:g}: {text}"
