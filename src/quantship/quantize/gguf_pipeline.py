"""The GGUF pipeline: llama.cpp's own converter, importance matrix and quantizer.

Pipeline per variant: `convert_hf_to_gguf.py` (BF16, or F16 for an F16 variant) ->
optionally `llama-imatrix` over the calibration text -> `llama-quantize` with the
scheme, the imatrix and per-tensor `--tensor-type` rules for layer overrides. The
written file is read back with `gguf`: its real per-tensor types, tensor count and
bits per weight go to the manifest, and every tensor llama.cpp moved to a fallback
type (rows not a multiple of the type's block) is listed and warned about.

The quantizer is the `llama-quantize` binary, not `llama_cpp.llama_model_quantize`:
the binary loads imatrix files and parses per-tensor overrides itself, the Python
API would need both re-implemented over ctypes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from quantship.envs import llamacpp
from quantship.errors import InputError, QuantshipError
from quantship.formats.gguf_files import GGUF_FILE, IMATRIX_FILE
from quantship.quantize.base import QuantizeContext, VariantOutput
from quantship.quantize.gguf_cache import cache_key, cached_file
from quantship.quantize.gguf_inspect import GGUFSummary, parse_fallbacks, read_summary, remembered_summary
from quantship.quantize.gguf_names import (
    checkpoint_weight_names,
    hf_to_gguf_names,
    resolve_overrides,
    tensor_type_rules,
    ties_embeddings,
)
from quantship.quantize.gguf_tokcheck import check_tokenizer
from quantship.quantize.gguf_tools import IMATRIX_STEP, QUANTIZE_STEP, run_tool
from quantship.quantize.gguf_types import FLOAT_TYPES, PURE_FTYPES, SCHEMES, GGUFScheme, scheme_for
from quantship.quantize.spec import VariantSpec
from quantship.rundir import sha256_file, sha256_json

LOG_DIR = "logs"
_WORK_DIR = ".work"  # intermediates inside the staging folder, removed before returning
# Options of the llm-compressor methods that mean nothing for llama.cpp's fixed block types.
_NOT_FOR_GGUF = ("group_size", "symmetric", "act_order")


def check_request(spec: VariantSpec, ctx: QuantizeContext, checkpoint: Path, extra_copies: int) -> GGUFScheme:
    """Refuse what llama.cpp cannot do, before any work; returns the scheme.

    `extra_copies`: checkpoint-sized intermediates beyond the float GGUF (1 for convert).
    """
    scheme = scheme_for(spec.scheme)
    if scheme is None:
        raise InputError(
            f"variant {spec.name!r}: unknown GGUF scheme {spec.scheme!r}",
            f"use one of {', '.join(SCHEMES)}",
        )
    ignored = [option for option in _NOT_FOR_GGUF if option in spec.model_fields_set]
    if ignored:
        raise InputError(
            f"variant {spec.name!r}: {', '.join(ignored)} do not apply to GGUF (each type fixes its block size and grid)",
            f"remove {', '.join(ignored)} from the variant",
        )
    if spec.imatrix and scheme.uses_imatrix and ctx.calibration is None:
        raise InputError(
            f"variant {spec.name!r} asks for an imatrix but the run has no calibration data",
            f"run `quantship calibrate --run-dir {ctx.run_dir.root}` first, or set imatrix: false",
        )
    if spec.overrides and not scheme.quantized:
        raise InputError(f"variant {spec.name!r}: {scheme.name} is unquantized, layer overrides change nothing", "remove the overrides")
    toolchain = llamacpp.load()
    architecture = _architecture(checkpoint)
    if architecture not in toolchain.architectures:
        raise InputError(
            f"llama.cpp's converter cannot handle architecture {architecture!r}",
            "use a model the converter supports (`convert_hf_to_gguf.py --print-supported-models`) or another method",
        )
    _check_overrides_match(spec, checkpoint)
    _check_disk(ctx.run_dir.root, ctx.checkpoint, extra_copies)
    return scheme


def produce_gguf(
    spec: VariantSpec,
    ctx: QuantizeContext,
    checkpoint: Path,
    out_dir: Path,
    lineage: dict[str, Any] | None = None,
) -> VariantOutput:
    """Convert, (imatrix,) quantize, read back; writes GGUF_FILE and logs into `out_dir`."""
    scheme = scheme_for(spec.scheme)
    assert scheme is not None, "check() refuses unknown schemes"
    toolchain = llamacpp.load()
    work = out_dir / _WORK_DIR
    work.mkdir(parents=True, exist_ok=True)
    logs = out_dir / LOG_DIR
    target = out_dir / GGUF_FILE
    try:
        outtype = "f16" if scheme.name == "F16" else "bf16"
        gguf_py = _vendored_gguf_version(toolchain)
        if scheme.quantized:
            float_file = float_gguf(spec.name, ctx, checkpoint, toolchain, logs, outtype)
        else:
            float_file = target
            _convert(spec.name, toolchain, checkpoint, target, outtype, logs, ctx)
        source = remembered_summary(float_file) if scheme.quantized else read_summary(float_file)  # cached conversion: kept
        tokenizer_check = check_tokenizer(float_file, checkpoint, source.vocab)
        details: dict[str, Any] = {
            "gguf_file": GGUF_FILE,
            "scheme": scheme.name,
            "architecture": source.architecture,
            "converter": {
                "script": "convert_hf_to_gguf.py",
                "outtype": outtype.upper(),
                "gguf_py": gguf_py,
            },
            "reader_gguf": installed_gguf_version(),
            "llama_cpp": {"llama_cpp_python": toolchain.version, "build": toolchain.llama_cpp_build},
            "tokenizer_check": tokenizer_check,
            "imatrix": None,
            "overrides": [],
            "fallbacks": [],
        }
        warnings: list[str] = []
        if spec.imatrix and not scheme.uses_imatrix:
            warnings.append(f"{scheme.name} does not use an importance matrix: imatrix was not computed")
        if scheme.quantized:
            _quantize(spec, ctx, scheme, toolchain, checkpoint, source, float_file, target, work, logs, details)
            warnings += _fallback_warnings(details["fallbacks"], scheme, source.tensor_count)
        written = read_summary(target)
        _verify(written, source, details)
        if lineage is not None:
            details["lineage"] = lineage
        details.update(
            tensor_count=written.tensor_count,
            type_histogram=written.histogram(),
            tensor_types=written.tensor_types,
            file_bytes=target.stat().st_size,
        )
        return VariantOutput(
            bits_per_weight=round(written.bits_per_weight, 4),
            details=details,
            warnings=warnings,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _convert(label: str, toolchain: llamacpp.Toolchain, checkpoint: Path, out: Path, outtype: str, logs: Path,
             ctx: QuantizeContext) -> None:
    run_tool(
        f"{label}: convert to GGUF {outtype.upper()}",
        [sys.executable, str(toolchain.converter), str(checkpoint), "--outfile", str(out), "--outtype", outtype],
        logs / "convert.log",
        ctx.console,
        env=toolchain.converter_env(),
    )


def float_gguf(label: str, ctx: QuantizeContext, checkpoint: Path, toolchain: llamacpp.Toolchain, logs: Path,
               outtype: str = "bf16") -> Path:
    """The run's cached float conversion of `checkpoint`, converted on first use."""
    key = cache_key(ctx.run_dir, checkpoint, outtype=outtype, gguf_py=_vendored_gguf_version(toolchain),
                    build=toolchain.llama_cpp_build)
    float_file, reused = cached_file(
        ctx.run_dir, f"model-{key}-{outtype}.gguf", lambda out: _convert(label, toolchain, checkpoint, out, outtype, logs, ctx)
    )
    if reused:
        ctx.console.print(f"{label}: reusing this run's GGUF {outtype.upper()} conversion ({float_file.name})")
    return float_file


def pure_sources(label: str, ctx: QuantizeContext, checkpoint: Path, imatrix: bool, logs: Path) -> tuple[Path, Path | None]:
    """The run's float conversion and (when asked) importance matrix, made once for every pure_candidate."""
    toolchain = llamacpp.load()
    logs.mkdir(parents=True, exist_ok=True)
    float_file = float_gguf(label, ctx, checkpoint, toolchain, logs)
    if not imatrix:
        return float_file, None
    matrix = logs / IMATRIX_FILE
    _imatrix(label, ctx, toolchain, float_file, matrix, logs, str(os.cpu_count() or 1))
    return float_file, matrix


def pure_candidate(label: str, ctx: QuantizeContext, float_file: Path, imatrix: Path | None, ggml_type: str, logs: Path) -> Path:
    """The whole model at one ggml type (`llama-quantize --pure`), cached in the run.

    What the per-tensor allocator dequantizes to measure that type's error on every
    tensor; tensors whose rows do not fit the type come out as llama.cpp's fallback,
    which the caller reads back and never proposes. Q8_0 reads no importance matrix.
    """
    toolchain = llamacpp.load()
    threads = str(os.cpu_count() or 1)
    argv = [str(toolchain.llama_quantize), "--pure"]
    uses = imatrix is not None and ggml_type != "Q8_0"
    if uses:
        argv += ["--imatrix", str(imatrix)]

    def quantize(out: Path) -> None:
        run_tool(f"{label}: every tensor at {ggml_type}", [*argv, str(float_file), str(out), PURE_FTYPES.get(ggml_type, ggml_type),
                                                          threads], logs / f"candidate-{ggml_type}.log", ctx.console)

    identity = {"model": float_file.name, "imatrix": sha256_file(imatrix)[:16] if uses else None, "type": ggml_type,
                "build": toolchain.llama_cpp_build}
    return cached_file(ctx.run_dir, f"candidate-{sha256_json(identity)[:24]}.gguf", quantize)[0]


def _quantize(
    spec: VariantSpec,
    ctx: QuantizeContext,
    scheme: GGUFScheme,
    toolchain: llamacpp.Toolchain,
    checkpoint: Path,
    source: GGUFSummary,
    float_file: Path,
    target: Path,
    work: Path,
    logs: Path,
    details: dict[str, Any],
) -> None:
    threads = str(os.cpu_count() or 1)
    argv = [str(toolchain.llama_quantize)]
    if spec.imatrix and scheme.uses_imatrix:
        details["imatrix"] = _imatrix(spec.name, ctx, toolchain, float_file, target.parent / IMATRIX_FILE, logs, threads)
        argv += ["--imatrix", str(target.parent / IMATRIX_FILE)]
    if spec.overrides:
        mapping = hf_to_gguf_names(checkpoint_weight_names(checkpoint), source.architecture, source.block_count or 0)
        resolved = resolve_overrides(spec.overrides, mapping, source.matrices(), ties_embeddings(checkpoint))
        rules = work / "tensor-types.txt"
        rules.write_text("\n".join(tensor_type_rules(resolved)) + "\n", encoding="utf-8")
        argv += ["--tensor-type-file", str(rules)]
        details["overrides"] = [vars(r) for r in resolved]
    argv += [str(float_file), str(target), scheme.name, threads]
    output = run_tool(
        f"{spec.name}: quantize to {scheme.name}", argv, logs / "quantize.log", ctx.console,
        step=QUANTIZE_STEP, total=source.tensor_count,
    )
    details["fallbacks"] = parse_fallbacks(output)


def _imatrix(
    label: str,
    ctx: QuantizeContext,
    toolchain: llamacpp.Toolchain,
    float_file: Path,
    out_file: Path,
    logs: Path,
    threads: str,
) -> dict[str, Any]:
    """Importance matrix from the calibration text, one chunk per calibration window.

    llama-imatrix tokenizes the text itself, so chunk boundaries follow its own
    tokenization of the decoded windows, not the stored token windows exactly.
    """
    calibration = ctx.calibration
    assert calibration is not None, "check() requires calibration for imatrix"
    seq_len = int(calibration.stats["seq_len"])
    samples = int(calibration.stats["samples"])
    log = logs / "imatrix.log"

    # The float file's cached name already carries the checkpoint and converter identity.
    name = f"imatrix-{sha256_json({'model': float_file.name, 'calibration': calibration.sha256})[:24]}.gguf"

    def compute(out: Path) -> None:
        run_tool(
            f"{label}: importance matrix over {samples} calibration windows",
            [str(toolchain.llama_imatrix), "-m", str(float_file), "-f", str(calibration.text_path), "-o", str(out),
             "-c", str(seq_len), "--chunks", str(samples), "-t", threads],
            log,
            ctx.console,
            step=IMATRIX_STEP,
            total=samples,
        )
        shutil.copyfile(log, out.parent / f"{name}.log")  # its output is what the manifest reads

    cached, reused = cached_file(ctx.run_dir, name, compute)
    shutil.copyfile(cached, out_file)
    if reused:
        ctx.console.print(f"{label}: reusing this run's importance matrix ({cached.name})")
        log.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(cached.parent / f"{name}.log", log)
    output = log.read_text(encoding="utf-8", errors="replace")
    chunks = [int(n) for n in IMATRIX_STEP.findall(output)]
    final_ppl = next(
        (line.split("=", 1)[1].split("+/-")[0].strip() for line in output.splitlines() if line.startswith("Final estimate: PPL")),
        None,
    )
    return {
        "file": IMATRIX_FILE,
        "calibration_sha256": calibration.sha256,
        "context": seq_len,
        "chunks_requested": samples,
        "chunks_computed": max(chunks, default=0),
        "float_model_ppl_on_calibration": float(final_ppl) if final_ppl else None,
    }


def _fallback_warnings(fallbacks: list[dict], scheme: GGUFScheme, tensor_count: int) -> list[str]:
    if not fallbacks:
        return []
    used: dict[str, int] = {}
    for item in fallbacks:
        key = f"{item['requested']}->{item['used']}"
        used[key] = used.get(key, 0) + 1
    rows = sorted({item["row_length"] for item in fallbacks})
    blocks = sorted({item["block"] for item in fallbacks})
    return [
        f"{scheme.name}: llama.cpp fell back to another type for {len(fallbacks)} of {tensor_count} tensors "
        f"(row lengths {rows} are not multiples of {blocks}): {', '.join(f'{n}x {k}' for k, n in sorted(used.items()))}; "
        "the file is not the mixture the scheme's name suggests, compare it with a legacy 32-block type (Q4_1, Q5_0)"
    ]


def _verify(written: GGUFSummary, source: GGUFSummary, details: dict[str, Any]) -> None:
    """The quantized file holds every tensor of the converted one, with the types asked for."""
    if written.tensor_count != source.tensor_count or set(written.tensor_types) != set(source.tensor_types):
        raise QuantshipError(
            f"llama-quantize wrote {written.tensor_count} tensors, the converted model has {source.tensor_count}",
            "see logs/quantize.log in the variant folder",
        )
    for override in details["overrides"]:
        wrong = {t: written.tensor_types[t] for t in override["tensors"] if written.tensor_types[t] != override["ggml_type"]}
        if wrong:
            raise QuantshipError(
                f"layer override {override['pattern']!r} asked for {override['ggml_type']} but the file holds {wrong}",
                "see logs/quantize.log in the variant folder",
            )
    if details["scheme"] not in FLOAT_TYPES:
        unquantized = [n for n in written.matrices() if written.tensor_types[n] in FLOAT_TYPES and n not in _kept_float(details)]
        details["unquantized_matrices"] = unquantized


def _kept_float(details: dict[str, Any]) -> set[str]:
    return {t for o in details["overrides"] if o["ggml_type"] in FLOAT_TYPES for t in o["tensors"]}


def _architecture(checkpoint: Path) -> str:
    try:
        config = json.loads((Path(checkpoint) / "config.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{checkpoint} has no config.json", "point the run at a Hugging Face checkpoint folder") from None
    architectures = config.get("architectures") or []
    if not architectures:
        raise InputError(f"{checkpoint}/config.json names no architecture", "add `architectures` to config.json")
    return architectures[0]


def _check_overrides_match(spec: VariantSpec, checkpoint: Path) -> None:
    """Each override regex matches a 2-D weight's module name (exact GGUF names come after conversion)."""
    if not spec.overrides:
        return
    # Module names, whatever the weights are stored as (`weight`, `weight_packed`, ...).
    modules = sorted({name.rsplit(".", 1)[0] for name in checkpoint_weight_names(checkpoint)})
    if ties_embeddings(checkpoint):
        modules.append("lm_head")
    for override in spec.overrides:
        if not any(re.search(override.pattern, module) for module in modules):
            raise InputError(
                f"variant {spec.name!r}: layer override {override.pattern!r} matches no module of {checkpoint}",
                "match Hugging Face module names such as 'lm_head', 'model.layers.0.', 'self_attn.k_proj'",
            )


def _check_disk(run_root: Path, checkpoint: Path, extra_copies: int) -> None:
    """The float GGUF and the quantized file need about twice the baseline checkpoint."""
    size = sum(f.stat().st_size for f in Path(checkpoint).glob("*.safetensors"))
    needed = int(size * (2 + extra_copies) * 1.1)
    probe = Path(run_root)
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < needed:
        raise InputError(
            f"not enough disk space in {probe}: a GGUF variant of this checkpoint needs about {needed / 2**30:.1f} GiB, "
            f"{free / 2**30:.1f} GiB are free",
            "free disk space or use a run directory on a bigger disk",
        )


def _vendored_gguf_version(toolchain: llamacpp.Toolchain) -> str:
    try:
        text = (toolchain.gguf_py / "pyproject.toml").read_text(encoding="utf-8")
    except FileNotFoundError:
        return "unknown"
    line = next((line for line in text.splitlines() if line.startswith("version")), 'version = "unknown"')
    return f"{line.split('=', 1)[1].strip().strip(chr(34))} (vendored in llama-cpp-python {toolchain.version})"


def installed_gguf_version() -> str | None:
    """The PyPI `gguf` used to read files back (may differ from the converter's vendored copy)."""
    try:
        return metadata.version("gguf")
    except metadata.PackageNotFoundError:
        return None
