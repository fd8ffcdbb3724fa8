"""`quantship quantize`: the baseline checkpoint -> variants/<name>/ (see docs/quantize.md).

The real interface is a YAML list of variants (--config); --variant and the option
flags are shortcuts that build the same list.
"""

from __future__ import annotations

from pathlib import Path

import typer

from quantship.commands.common import name_option, resolve_run_dir, run_dir_option
from quantship.errors import InputError, QuantshipError


def register(app: typer.Typer) -> None:
    @app.command("quantize")
    def quantize(
        run_dir: Path = run_dir_option(),
        name: str = name_option(),
        variant: list[str] = typer.Option(
            None, "--variant", "-v",
            help="NAME:METHOD[:SCHEME[:SOURCE]], repeatable; e.g. w4g64:gptq:W4A16, int8:smoothquant-gptq, q4km:gguf:Q4_K_M.",
        ),
        config: Path = typer.Option(None, "--config", "-c", help="YAML list of variants (the committed form; see docs/quantize.md)."),
        group_size: str = typer.Option(
            None, "--group-size",
            help="Group size for grouped int schemes (W4A16/W8A16): N, -1 (per channel) or auto.",
        ),
        keep: list[str] = typer.Option(
            None, "--keep",
            help="Regex of layers to leave unquantized (bf16), repeatable; e.g. lm_head, 'layers\\.0\\.'.",
        ),
        keep_8bit: list[str] = typer.Option(None, "--keep-8bit", help="Regex of layers to quantize at 8 bits instead, repeatable."),
        asymmetric: bool = typer.Option(False, "--asymmetric", help="Asymmetric (zero point) int weights."),
        act_order: bool = typer.Option(False, "--act-order", help="GPTQ: quantize columns in activation order."),
        imatrix: bool = typer.Option(False, "--imatrix", help="GGUF: importance matrix from the run's calibration text."),
        force: bool = typer.Option(False, "--force", help="Redo variants even if inputs and options are unchanged."),
        keep_going: bool = typer.Option(False, "--keep-going", help="Record a refused or failed variant and go on with the others."),
    ) -> None:
        """Quantize the baseline checkpoint into variants (RTN, GPTQ, AWQ, INT8, FP8, GGUF, NF4)."""
        from quantship.options import QuantizeOptions
        from quantship.progress import stderr_console
        from quantship.quantize.variants import variant_stage
        from quantship.rundir import RunDir
        from quantship.stages import Context
        from quantship.stages import quantize as stage

        flags = {
            "group_size": group_size, "keep": keep, "keep_8bit": keep_8bit,
            "asymmetric": asymmetric, "act_order": act_order, "imatrix": imatrix,
        }
        specs = _specs(variant or [], config, flags)
        root = resolve_run_dir(run_dir, name)
        run = RunDir(root)
        options = QuantizeOptions.model_construct(variants=specs, keep_going=keep_going)  # run_quantize refuses repeats, in one line
        results = stage.run(run, options, Context(stderr_console(), force=force)).result
        for result in results:
            if result.ok:
                typer.echo(run.stage_dir(variant_stage(result.name)))
        missing = [r.name for r in results if not r.ok]
        if missing:
            raise QuantshipError(
                f"{len(missing)} of {len(results)} variants were not produced: {', '.join(missing)}",
                "see the reasons in the table above",
            )


def _specs(variants: list[str], config: Path | None, flags: dict):
    from quantship.quantize.config import load_variants, parse_variants

    if config is not None and variants:
        raise InputError("--config and --variant both given", "list every variant in the YAML file, or use --variant alone")
    if config is not None:
        used = [f"--{k.replace('_', '-')}" for k, v in flags.items() if v]
        if used:
            raise InputError(f"{', '.join(used)} apply to --variant only", "put these options into the variants in the YAML file")
        return load_variants(config)
    if not variants:
        raise InputError("no variants requested", "pass --variant NAME:METHOD[:SCHEME] (repeatable) or --config variants.yaml")
    entries = [_entry(text, flags) for text in variants]
    applied = {"group_size": "group_size", "asymmetric": "symmetric", "act_order": "act_order", "imatrix": "imatrix"}
    for flag, key in applied.items():
        if flags[flag] and not any(key in e for e in entries):
            raise InputError(f"--{flag.replace('_', '-')} applies to none of the variants given", f"remove --{flag.replace('_', '-')}")
    return parse_variants(entries, "--variant")


def _entry(text: str, flags: dict) -> dict:
    """One --variant NAME:METHOD[:SCHEME[:SOURCE]] with the option flags applied."""
    from quantship.quantize.llmc_schemes import METHOD_SCHEMES, SCHEMES

    parts = text.split(":")
    if not 2 <= len(parts) <= 4 or not all(parts[:2]):
        raise InputError(f"--variant {text!r} is not NAME:METHOD[:SCHEME[:SOURCE]]", "e.g. --variant w4g64:gptq:W4A16")
    entry: dict = {"name": parts[0], "method": parts[1]}
    if len(parts) > 2 and parts[2]:
        entry["scheme"] = parts[2]
    if len(parts) > 3:
        entry["source"] = parts[3]
    method = entry["method"]
    overrides = [{"pattern": p, "precision": "bf16"} for p in flags["keep"] or []]
    overrides += [{"pattern": p, "precision": "8bit"} for p in flags["keep_8bit"] or []]
    if overrides:
        entry["overrides"] = overrides
    if method in METHOD_SCHEMES:
        scheme = SCHEMES.get((entry.get("scheme") or METHOD_SCHEMES[method][0]).upper())
        grouped = scheme is not None and scheme.grouped
        if flags["group_size"] is not None and grouped:
            entry["group_size"] = _group_size(flags["group_size"])
        if flags["asymmetric"] and grouped:
            entry["symmetric"] = False
        if flags["act_order"] and method in ("gptq", "smoothquant-gptq"):
            entry["act_order"] = True
    if flags["imatrix"] and method in ("gguf", "convert"):
        from quantship.quantize.gguf_types import scheme_for

        gguf = scheme_for(entry.get("scheme"))
        if gguf is None or gguf.uses_imatrix:  # unknown schemes are refused later, with the list
            entry["imatrix"] = True
    return entry


def _group_size(text: str) -> int | str:
    if text == "auto":
        return "auto"
    try:
        return int(text)
    except ValueError:
        raise InputError(f"--group-size {text!r} is not a number or auto", "use e.g. --group-size 64, -1 or auto") from None
