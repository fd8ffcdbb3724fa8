"""From a VariantSpec to an llm-compressor recipe: schemes, group sizes, layer overrides.

Pure functions over the model's Linear layers (name -> input columns), so every
refusal (unknown scheme, a group size that does not divide a layer, an override that
matches nothing) happens before a model is loaded, with the reason and the fix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from quantship.errors import InputError
from quantship.quantize.spec import VariantSpec

LM_HEAD = "lm_head"
# Group sizes vLLM's WNA16 kernels (Marlin, Machete) accept, largest first; "auto" picks from these.
KERNEL_GROUP_SIZES = (128, 64, 32)
DEFAULT_GROUP_SIZE = 128  # compressed-tensors' W4A16 / W8A16 presets


@dataclass(frozen=True)
class Scheme:
    """A compressed-tensors preset as quantship offers it."""

    name: str
    weight_bits: int
    grouped: bool  # int weights quantized per group of input columns (group_size applies)
    activations: str  # what vLLM does with activations, for the manifest


SCHEMES = {
    "W4A16": Scheme("W4A16", 4, True, "bf16/fp16 (weight-only)"),
    "W8A16": Scheme("W8A16", 8, True, "bf16/fp16 (weight-only)"),
    "W8A8": Scheme("W8A8", 8, False, "int8, dynamic per-token scales"),
    "FP8_DYNAMIC": Scheme("FP8_DYNAMIC", 8, False, "fp8, dynamic per-token scales"),
    "FP8": Scheme("FP8", 8, False, "fp8, static per-tensor scales from calibration"),
}

# method -> (default scheme, schemes it can produce)
METHOD_SCHEMES: dict[str, tuple[str, tuple[str, ...]]] = {
    "rtn": ("W4A16", ("W4A16", "W8A16")),
    "gptq": ("W4A16", ("W4A16", "W8A16")),
    "awq": ("W4A16", ("W4A16",)),
    "smoothquant-gptq": ("W8A8", ("W8A8",)),
    "fp8-dynamic": ("FP8_DYNAMIC", ("FP8_DYNAMIC",)),
    "fp8-static": ("FP8", ("FP8",)),
}
NEEDS_CALIBRATION = frozenset({"gptq", "awq", "smoothquant-gptq", "fp8-static"})


@dataclass
class Plan:
    """Everything the recipe needs, resolved and checked."""

    method: str
    scheme: Scheme
    group_size: int | None  # None: per-channel / per-tensor (no groups)
    symmetric: bool
    actorder: str | None
    ignore: list[str]  # `re:` patterns and names handed to llm-compressor
    eight_bit_targets: list[str]  # `re:` patterns quantized with the 8-bit override scheme
    kept_bf16: list[str]  # resolved module names left unquantized
    kept_8bit: list[str]  # resolved module names at 8 bits
    main_modules: list[str]  # resolved module names with the main scheme
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "scheme": self.scheme.name,
            "weight_bits": self.scheme.weight_bits,
            "activations": self.scheme.activations,
            "group_size": self.group_size,
            "symmetric": self.symmetric,
            "actorder": self.actorder,
            "ignore": self.ignore,
            "eight_bit_targets": self.eight_bit_targets,
            "modules": {
                "main_scheme": len(self.main_modules),
                "8bit": self.kept_8bit,
                "bf16": self.kept_bf16,
            },
        }


def resolve_scheme(spec: VariantSpec) -> Scheme:
    default, allowed = METHOD_SCHEMES[spec.method]
    name = (spec.scheme or default).upper()
    if name not in allowed:
        raise InputError(
            f"variant {spec.name!r}: method {spec.method} cannot produce scheme {spec.scheme!r}",
            f"use scheme {' or '.join(allowed)} (or another method)",
        )
    return SCHEMES[name]


def plan_variant(spec: VariantSpec, linear_columns: dict[str, int]) -> Plan:
    """Check `spec` against the model's Linear layers (name -> input columns); build the plan."""
    scheme = resolve_scheme(spec)
    _refuse_options(spec, scheme)
    bf16, eight = _resolve_overrides(spec, scheme, linear_columns)
    main = [n for n in linear_columns if n not in bf16 and n not in eight]
    if not main:
        raise InputError(f"variant {spec.name!r}: the overrides keep every layer out of {scheme.name}", "narrow the override patterns")
    group_size = _group_size(spec, scheme, {n: linear_columns[n] for n in [*main, *eight]})
    notes = []
    if spec.group_size == "auto" and group_size != DEFAULT_GROUP_SIZE:
        notes.append(f"group_size auto picked {group_size}: {DEFAULT_GROUP_SIZE} does not divide every quantized layer")
    return Plan(
        method=spec.method,
        scheme=scheme,
        group_size=group_size,
        symmetric=spec.symmetric,
        actorder=("weight" if spec.act_order else None) if spec.method in ("gptq", "smoothquant-gptq") else None,
        ignore=[LM_HEAD] + [_re(o.pattern) for o in spec.overrides if o.precision == "bf16"],
        eight_bit_targets=[_re(o.pattern) for o in spec.overrides if o.precision == "8bit"],
        kept_bf16=sorted(bf16),
        kept_8bit=sorted(eight),
        main_modules=main,
        notes=notes,
    )


def _re(pattern: str) -> str:
    """compressed-tensors applies `re:` patterns with re.match; quantship's are re.search."""
    return f"re:.*(?:{pattern})"


def _refuse_options(spec: VariantSpec, scheme: Scheme) -> None:
    if spec.source is not None:
        raise InputError(f"variant {spec.name!r}: `source` is only for method convert", "remove `source`")
    if spec.imatrix:
        raise InputError(f"variant {spec.name!r}: imatrix is a llama.cpp (GGUF) option", "remove imatrix or use method gguf")
    if not spec.symmetric and not scheme.grouped:
        raise InputError(
            f"variant {spec.name!r}: {scheme.name} weights are symmetric only (vLLM's kernels take no zero point)",
            "remove `symmetric: false`",
        )
    if spec.act_order and spec.method not in ("gptq", "smoothquant-gptq"):
        raise InputError(
            f"variant {spec.name!r}: act_order is a GPTQ option, {spec.method} has no column order",
            "remove act_order or use method gptq",
        )
    if spec.group_size is not None and not scheme.grouped:
        raise InputError(
            f"variant {spec.name!r}: {scheme.name} uses per-channel/per-tensor scales, group_size does not apply",
            "remove group_size",
        )


def _resolve_overrides(spec: VariantSpec, scheme: Scheme, linear_columns: dict[str, int]) -> tuple[set[str], set[str]]:
    """Module names kept in bf16 and at 8 bits; an override matching nothing is an error."""
    bf16: set[str] = {n for n in linear_columns if n == LM_HEAD}
    eight: set[str] = set()
    names = list(linear_columns)
    for override in spec.overrides:
        matched = {n for n in names if re.search(override.pattern, n)}
        if not matched:
            example = ", ".join(names[:3])
            raise InputError(
                f"variant {spec.name!r}: layer override {override.pattern!r} matches no Linear layer",
                f"match module names such as {example}",
            )
        if override.precision == "bf16":
            bf16 |= matched
            continue
        if scheme.weight_bits == 8:
            raise InputError(
                f"variant {spec.name!r}: {scheme.name} is already 8-bit, an 8bit override changes nothing",
                "use precision bf16",
            )
        if LM_HEAD in matched:
            raise InputError(
                f"variant {spec.name!r}: override {override.pattern!r} asks for an 8-bit lm_head; "
                "llm-compressor variants keep lm_head in bf16",
                "drop lm_head from the pattern (it is already unquantized)",
            )
        eight |= matched
    return bf16, eight - bf16


def _group_size(spec: VariantSpec, scheme: Scheme, columns: dict[str, int]) -> int | None:
    if not scheme.grouped:
        return None
    requested = spec.group_size if spec.group_size is not None else DEFAULT_GROUP_SIZE
    if requested == "auto":
        return auto_group_size(spec.name, columns)
    if requested == -1:
        return None  # per output channel
    if requested < 1:
        raise InputError(
            f"variant {spec.name!r}: group_size {requested} is not a positive size",
            "use 32, 64, 128, -1 (per channel) or auto",
        )
    bad = {n: c for n, c in columns.items() if c % requested}
    if bad:
        name, cols = next(iter(bad.items()))
        fits = largest_dividing(columns.values())
        hint = f"group_size: auto (picks {fits} here)" if fits else "group_size: -1 (per channel)"
        raise InputError(
            f"variant {spec.name!r}: group size {requested} does not divide {len(bad)} quantized layers "
            f"(e.g. {name} has {cols} input columns)",
            f"set {hint}, or keep those layers in bf16 with an override",
        )
    return requested


def largest_dividing(columns) -> int | None:
    cols = list(columns)
    return next((g for g in KERNEL_GROUP_SIZES if all(c % g == 0 for c in cols)), None)


def auto_group_size(variant: str, columns: dict[str, int]) -> int:
    found = largest_dividing(columns.values())
    if found is None:
        widths = sorted(set(columns.values()))
        raise InputError(
            f"variant {variant!r}: no kernel group size ({', '.join(map(str, KERNEL_GROUP_SIZES))}) divides every quantized layer "
            f"(input columns {widths[:6]})",
            "use group_size: -1 (per channel) or keep the odd layers in bf16 with an override",
        )
    return found


def build_recipe(plan: Plan) -> list:
    """llm-compressor modifiers for the plan (imported here: llm-compressor is heavy)."""
    from llmcompressor.modifiers.quantization import GPTQModifier, QuantizationModifier

    groups = config_groups(plan)
    if plan.method in ("rtn", "fp8-dynamic", "fp8-static"):
        return [QuantizationModifier(config_groups=groups, ignore=plan.ignore)]
    if plan.method == "gptq":
        return [GPTQModifier(config_groups=groups, ignore=plan.ignore, actorder=plan.actorder)]
    if plan.method == "awq":
        from llmcompressor.modifiers.transform.awq import AWQModifier

        return [AWQModifier(), QuantizationModifier(config_groups=groups, ignore=plan.ignore)]
    if plan.method == "smoothquant-gptq":
        from llmcompressor.modifiers.transform.smoothquant import SmoothQuantModifier

        # 0.8: the strength llm-compressor's W8A8 examples use for Llama-family models
        return [
            SmoothQuantModifier(smoothing_strength=0.8),
            GPTQModifier(config_groups=groups, ignore=plan.ignore, actorder=plan.actorder),
        ]
    raise AssertionError(f"no recipe for method {plan.method}")


def config_groups(plan: Plan) -> dict:
    """The main scheme on every Linear layer; the 8-bit override group wins by `re:` precedence."""
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
    from compressed_tensors.quantization.quant_scheme import PRESET_SCHEMES

    preset = PRESET_SCHEMES[plan.scheme.name]

    def weights(bits: int) -> QuantizationArgs:
        args = preset["weights"].model_dump()
        args["num_bits"] = bits
        if plan.scheme.grouped:
            args.update(
                symmetric=plan.symmetric,
                group_size=plan.group_size,
                strategy="group" if plan.group_size else "channel",
            )
        return QuantizationArgs(**args)

    main = {k: v for k, v in preset.items() if k != "weights"}
    groups = {"group_0": QuantizationScheme(targets=["Linear"], weights=weights(plan.scheme.weight_bits), **main)}
    if plan.eight_bit_targets:
        groups["group_1"] = QuantizationScheme(targets=list(plan.eight_bit_targets), weights=weights(8))
    return groups
