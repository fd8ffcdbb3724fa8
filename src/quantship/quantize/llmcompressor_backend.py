"""llm-compressor variants (RTN, GPTQ, AWQ, SmoothQuant+GPTQ, FP8): compressed-tensors
checkpoints that vLLM loads as they are.

quantship writes the recipe (llmc_schemes), feeds the run's calibration windows to
`oneshot`, and reads the written checkpoint back to measure it. Two things the library
does not do are done here: group-size divisibility is checked before the model is
loaded (with `group_size: auto` to pick a size that fits), and AWQ runs on a CPU-only
torch (see `_no_pinning_without_accelerator`).
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

from quantship.errors import InputError, QuantshipError
from quantship.quantize.base import QuantizeContext, VariantOutput
from quantship.quantize.llmc_schemes import NEEDS_CALIBRATION, Plan, build_recipe, plan_variant
from quantship.quantize.spec import VariantSpec

FORMAT = "compressed-tensors"
_LOG_SWITCH = "LLM_COMPRESSOR_LOG_DISABLED"


class LLMCompressorBackend:
    name = "llm-compressor"

    def check(self, spec: VariantSpec, ctx: QuantizeContext) -> None:
        self.plan(spec, ctx)

    def plan(self, spec: VariantSpec, ctx: QuantizeContext) -> Plan:
        """Every refusal that needs no weights: scheme, options, layers, calibration, disk."""
        _route_library_logs()
        architecture, columns = model_layers(Path(ctx.checkpoint))
        plan = plan_variant(spec, columns)
        _check_architecture(spec, architecture)
        if spec.method in NEEDS_CALIBRATION and ctx.calibration is None:
            raise InputError(
                f"variant {spec.name!r}: method {spec.method} needs calibration data and the run has none",
                f"run `quantship calibrate --run-dir {ctx.run_dir.root}` first",
            )
        _check_disk(ctx.run_dir.root, Path(ctx.checkpoint))
        return plan

    def quantize(self, spec: VariantSpec, ctx: QuantizeContext, out_dir: Path) -> VariantOutput:
        from llmcompressor import oneshot
        from transformers import AutoModelForCausalLM, AutoTokenizer

        plan = self.plan(spec, ctx)
        recipe = build_recipe(plan)
        dataloader, samples, seq_len = None, 0, None
        if spec.method in NEEDS_CALIBRATION:
            dataloader, samples, seq_len = _calibration_loader(ctx)
        with ctx.console.status(f"{spec.name}: loading {ctx.checkpoint}"):
            model = AutoModelForCausalLM.from_pretrained(str(ctx.checkpoint), dtype="auto")
            tokenizer = AutoTokenizer.from_pretrained(str(ctx.checkpoint))
        ctx.console.print(
            f"{spec.name}: llm-compressor {spec.method} {plan.scheme.name}" + (f" over {samples} calibration windows" if samples else "")
        )
        with _no_pinning_without_accelerator():
            oneshot(
                model=model,
                processor=tokenizer,
                recipe=recipe,
                dataset=dataloader,
                num_calibration_samples=max(samples, 1),
                max_seq_length=seq_len,
                output_dir=str(out_dir),
            )
        del model
        written = read_back(out_dir)
        details: dict[str, Any] = {
            "library": "llm-compressor oneshot",
            "scheme": plan.scheme.name,
            "group_size": plan.group_size,
            "recipe_file": "recipe.yaml",
            "plan": plan.summary(),
            "quantization_config": written["quantization_config"],
            "tensor_dtypes": written["dtypes"],
            "quantized_linear_bits_per_weight": written["quantized_linear_bits_per_weight"],
            "calibration": {"samples": samples, "seq_len": seq_len} if samples else None,
            "device": _onload_device(),
            "cpu_workarounds": ["AWQ: pin_memory skipped (CPU-only torch)"] if spec.method == "awq" and not _has_accelerator() else [],
        }
        return VariantOutput(
            bits_per_weight=written["bits_per_weight"],
            details=details,
            warnings=plan.notes,
        )


BACKEND = LLMCompressorBackend()


@lru_cache(maxsize=8)
def model_layers(checkpoint: Path) -> tuple[str, dict[str, int]]:
    """(architecture, Linear module name -> input columns), from config.json on the meta device."""
    import torch
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(str(checkpoint))
        with init_empty_weights():
            model = AutoModelForCausalLM.from_config(config)
    except (ValueError, KeyError, OSError) as error:
        raise InputError(
            f"transformers cannot build a causal LM from {checkpoint}/config.json ({str(error).splitlines()[0]})",
            "use a Hugging Face causal LM checkpoint of an architecture transformers knows",
        ) from None
    columns = {name: int(m.in_features) for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    architecture = type(model).__name__
    if not columns:
        raise InputError(f"{architecture} has no Linear layers for llm-compressor to quantize", "use method gguf")
    return architecture, columns


def _check_architecture(spec: VariantSpec, architecture: str) -> None:
    """AWQ and SmoothQuant need per-architecture layer mappings; refuse what has none."""
    if spec.method == "awq":
        from llmcompressor.modifiers.transform.awq import AWQ_MAPPING_REGISTRY as registry
    elif spec.method == "smoothquant-gptq":
        from llmcompressor.modifiers.transform.smoothquant.utils import MAPPINGS_REGISTRY as registry
    else:
        return
    if architecture not in registry:
        raise InputError(
            f"variant {spec.name!r}: llm-compressor has no {spec.method} layer mappings for {architecture}",
            "use method gptq or rtn for this model",
        )


def _calibration_loader(ctx: QuantizeContext):
    """The run's calibration windows, one [1, L] batch each, as oneshot's DataLoader."""
    import torch
    from torch.utils.data import DataLoader

    calibration = ctx.calibration
    assert calibration is not None, "check() refuses calibrated methods without calibration"
    rows = [{"input_ids": row[None], "attention_mask": torch.ones_like(row)[None]} for row in calibration.input_ids]
    return DataLoader(rows, batch_size=None), len(rows), int(calibration.input_ids.shape[1])


@contextlib.contextmanager
def _no_pinning_without_accelerator() -> Iterator[None]:
    """Let AWQ run on a CPU-only torch.

    AWQ pins its cached activations before each grid search to speed up host-to-device
    copies; torch without an accelerator refuses to pin ("Cannot access accelerator
    device when none is available"). Pinning changes no value, and with no device
    there is no copy to speed up, so while oneshot runs on such a torch the pin is a
    no-op. Nothing changes when an accelerator is present.
    """
    if _has_accelerator():
        yield
        return
    from llmcompressor.pipelines.cache import IntermediatesCache

    original = IntermediatesCache.pin_memory
    IntermediatesCache.pin_memory = lambda self, batch_index, input_names=None: None
    try:
        yield
    finally:
        IntermediatesCache.pin_memory = original


def _has_accelerator() -> bool:
    import torch

    return torch.accelerator.is_available()


def _onload_device() -> str:
    """Where oneshot runs the layers: llm-compressor onloads them to the accelerator if there is one."""
    import torch

    return torch.accelerator.current_accelerator().type if _has_accelerator() else "cpu"


@lru_cache(maxsize=1)
def _route_library_logs() -> None:
    """llm-compressor logs every step to stdout; keep only its warnings, on stderr.

    stdout stays for the command's own output (the variant folders). Per-layer GPTQ
    metrics and the expected "No accelerator available" notice on CPU are dropped.
    Importing llmcompressor installs a stdout sink and logs while importing its
    modifiers, so the import runs with its logging disabled (its own switch).
    """
    import os
    import sys

    previous = os.environ.get(_LOG_SWITCH)
    os.environ[_LOG_SWITCH] = "true"
    try:
        import llmcompressor.modifiers.quantization  # noqa: F401
        from llmcompressor.logger import LoggerConfig, configure_logger
    finally:
        if previous is None:
            del os.environ[_LOG_SWITCH]
        else:
            os.environ[_LOG_SWITCH] = previous
    from loguru import logger

    def keep(record) -> bool:
        return record["level"].name != "METRIC" and "No accelerator available" not in record["message"]

    configure_logger(LoggerConfig(console_log_level=None))
    logger.add(sys.stderr, level="WARNING", format="llm-compressor {level}: {message}", filter=keep)


def read_back(folder: Path) -> dict[str, Any]:
    """What was written: its quantization config and bits per weight from the tensors."""
    from quantship.quantize.variants import safetensors_storage

    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise QuantshipError(f"llm-compressor wrote no config.json into {folder}", "see the log above") from None
    qconfig = config.get("quantization_config") or {}
    if qconfig.get("quant_method") != FORMAT:
        raise QuantshipError(f"{folder}/config.json has no compressed-tensors quantization_config", "see the log above")
    storage = safetensors_storage(folder)
    return {
        "quantization_config": qconfig,
        "dtypes": storage.dtype_histogram(),
        "bits_per_weight": round(storage.bits_per_weight, 4),
        "quantized_linear_bits_per_weight": round(storage.quantized_bits_per_weight, 4) if storage.quantized_weights else None,
    }


def _check_disk(run_root: Path, checkpoint: Path) -> None:
    """A compressed checkpoint is at most the size of the baseline (FP8/INT8 ~ half)."""
    size = sum(f.stat().st_size for f in checkpoint.glob("*.safetensors"))
    probe = Path(run_root)
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < size * 1.1:
        raise InputError(
            f"not enough disk space in {probe}: an llm-compressor variant of this checkpoint needs up to "
            f"{size * 1.1 / 2**30:.1f} GiB, {free / 2**30:.1f} GiB are free",
            "free disk space or use a run directory on a bigger disk",
        )
