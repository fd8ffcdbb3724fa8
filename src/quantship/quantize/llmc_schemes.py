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
from quantship.quantize.llmc_candidates import FUSED_SHARDS, LlmcType, candidate_types, fused_name, parse_type, weight_args
from quantship.quantize.spec import LayerOverride, VariantSpec

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
# methods whose recipe takes `type` overrides with quantized types (bf16 works with every method)
TYPED_METHODS = ("rtn", "gptq")


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
    typed_targets: dict[str, list[str]] = field(default_factory=dict)  # quantized `type` -> its `re:` patterns
    kept_typed: dict[str, list[str]] = field(default_factory=dict)  # quantized `type` -> resolved module names

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
            "typed_targets": self.typed_targets,
            "modules": {
                "main_scheme": len(self.main_modules),
                "8bit": self.kept_8bit,
                "bf16": self.kept_bf16,
                "types": self.kept_typed,
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
    typed = _resolve_typed(spec, linear_columns, claimed=bf16 | eight)
    main = [n for n in linear_columns if n not in bf16 and n not in eight and n not in typed]
    if not main and not typed:
        raise InputError(f"variant {spec.name!r}: the overrides keep every layer out of {scheme.name}", "narrow the override patterns")
    group_size = _group_size(spec, scheme, {n: linear_columns[n] for n in [*main, *eight]})
    if any(o.type is not None for o in spec.overrides):
        main_label = _label(scheme.weight_bits, group_size, spec.symmetric) if scheme.grouped else scheme.name
        labels = dict.fromkeys(main, main_label)
        labels |= {n: _label(8, group_size, spec.symmetric) for n in eight} | {n: "bf16" for n in bf16}
        _check_fused(spec, labels | {n: kind.name for n, kind in typed.items()})
    notes = []
    if spec.group_size == "auto" and group_size != DEFAULT_GROUP_SIZE:
        notes.append(f"group_size auto picked {group_size}: {DEFAULT_GROUP_SIZE} does not divide every quantized layer")
    return Plan(
        method=spec.method,
        scheme=scheme,
        group_size=group_size,
        symmetric=spec.symmetric,
        actorder=("weight" if spec.act_order else None) if spec.method in ("gptq", "smoothquant-gptq") else None,
        ignore=[LM_HEAD] + [_re(o.pattern) for o in spec.overrides if _override_kind(o) == "bf16"],
        eight_bit_targets=[_re(o.pattern) for o in spec.overrides if _override_kind(o) == "8bit"],
        kept_bf16=sorted(bf16 | {n for n, kind in typed.items() if not kind.quantized}),
        kept_8bit=sorted(eight),
        main_modules=main,
        notes=notes,
        typed_targets=_typed_targets(spec.overrides),
        kept_typed=_group_names({n: kind.name for n, kind in typed.items() if kind.quantized}),
    )


def _label(bits: int, group_size: int | None, symmetric: bool) -> str:
    """A module's int weight grid, spelled like the types (W4A16-g64, W8A16 per channel)."""
    return f"W{bits}A16" + (f"-g{group_size}" if group_size else "") + ("" if symmetric else " asymmetric")


def _check_fused(spec: VariantSpec, labels: dict[str, str]) -> None:
    """vLLM fuses q/k/v and gate/up into one layer with one scheme: with `type` overrides, refuse a split."""
    families: dict[str, dict[str, str]] = {}
    for name, label in labels.items():
        fused = fused_name(name)
        if fused is not None:
            families.setdefault(fused, {})[name] = label
    for fused, members in families.items():
        if len(set(members.values())) > 1:
            shards = "|".join(FUSED_SHARDS[fused.rpartition(".")[2]])
            given = ", ".join(f"{n.rpartition('.')[2]} {label}" for n, label in members.items())
            raise InputError(
                f"variant {spec.name!r}: vLLM loads {fused} as one fused layer with one scheme, the overrides give its shards {given}",
                f"give them one type (one override such as {re.escape(fused.rpartition('.')[0])}\\.({shards})$)",
            )


def _override_kind(override: LayerOverride) -> str:
    """`bf16` or `8bit` (a `precision` override, or a `type: bf16` one), else the quantized type's name."""
    if override.type is None:
        return override.precision
    kind = parse_type(override.type)  # checked with its context by _resolve_typed
    return kind.name if kind.quantized else "bf16"


def _typed_targets(overrides: list[LayerOverride]) -> dict[str, list[str]]:
    """Quantized type -> the `re:` patterns of its overrides, in the spec's order (one config group each)."""
    targets: dict[str, list[str]] = {}
    for override in overrides:
        kind = _override_kind(override)
        if override.type is not None and kind != "bf16":
            targets.setdefault(kind, []).append(_re(override.pattern))
    return targets


def _group_names(types: dict[str, str]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for name, kind in sorted(types.items()):
        grouped.setdefault(kind, []).append(name)
    return grouped


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
        matched = _matched(spec, override, names)
        if override.type is not None:
            continue  # _resolve_typed
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


def _matched(spec: VariantSpec, override: LayerOverride, names: list[str]) -> set[str]:
    matched = {n for n in names if re.search(override.pattern, n)}
    if not matched:
        example = ", ".join(names[:3])
        raise InputError(
            f"variant {spec.name!r}: layer override {override.pattern!r} matches no Linear layer",
            f"match module names such as {example}",
        )
    return matched


def _resolve_typed(spec: VariantSpec, linear_columns: dict[str, int], claimed: set[str]) -> dict[str, LlmcType]:
    """Module name -> its exact type, for the `type` overrides.

    Each quantized type is one config group of `re:` targets, and compressed-tensors
    picks among several matching `re:` targets by sorting the patterns, not by the
    spec's order; so a module two overrides would give different things is refused
    here instead of being left to that order. `claimed`: modules the `precision`
    overrides (and lm_head) already decide.
    """
    typed: dict[str, LlmcType] = {}
    asked_by: dict[str, str] = {}
    names = list(linear_columns)
    for override in spec.overrides:
        if override.type is None:
            continue
        kind = _parse_override_type(spec, override)
        for name in sorted(_matched(spec, override, names)):
            if name == LM_HEAD and kind.quantized:
                raise InputError(
                    f"variant {spec.name!r}: override {override.pattern!r} asks {kind.name} for lm_head; "
                    "llm-compressor variants keep lm_head in bf16",
                    "drop lm_head from the pattern or give it type bf16",
                )
            if name == LM_HEAD:
                continue
            if name in claimed:
                other = next(o.pattern for o in spec.overrides if o.type is None and re.search(o.pattern, name))
                raise InputError(
                    f"variant {spec.name!r}: {name} is matched by type override {override.pattern!r} ({kind.name}) "
                    f"and by precision override {other!r}",
                    "make the patterns disjoint (one override per module)",
                )
            if name in typed and typed[name] != kind:
                raise InputError(
                    f"variant {spec.name!r}: {name} is matched by overrides {asked_by[name]!r} ({typed[name].name}) "
                    f"and {override.pattern!r} ({kind.name})",
                    "make the patterns disjoint (one override per module)",
                )
            if not kind.fits(linear_columns[name]):
                columns = linear_columns[name]
                raise InputError(
                    f"variant {spec.name!r}: override {override.pattern!r} asks {kind.name} for {name}, "
                    f"whose {columns} input columns are not a multiple of {kind.group_size}",
                    f"give it one of {', '.join(candidate_types(columns))}",
                )
            typed[name], asked_by[name] = kind, override.pattern
    return typed


def _parse_override_type(spec: VariantSpec, override: LayerOverride) -> LlmcType:
    assert override.type is not None
    try:
        kind = parse_type(override.type)
    except InputError as error:
        raise InputError(f"variant {spec.name!r}: layer override {override.pattern!r}: {error.problem}", error.fix) from None
    if kind.quantized and spec.method not in TYPED_METHODS:
        raise InputError(
            f"variant {spec.name!r}: layer override {override.pattern!r}: type {kind.name} is for methods "
            f"{' and '.join(TYPED_METHODS)}, not {spec.method}",
            "use method gptq or rtn, or type bf16",
        )
    return kind


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
    """The main scheme on the Linear layers; the 8-bit and per-type groups win by `re:` precedence.

    compressed-tensors (apply_quantization_config, utils.match.match_targets) gives a
    module matched by several groups the scheme of its most specific target: exact
    names, then `re:` patterns, then class names such as "Linear". The override groups
    hold only `re:` patterns and plan_variant keeps them disjoint, so each overridden
    module has one `re:` match and it beats the main group's "Linear". `ignore` beats
    every group.

    With `type` overrides the main group names its modules exactly instead of
    "Linear": vLLM matches a fused layer (qkv_proj, gate_up_proj) by name, then by a
    class target contained in its class name (QKVParallelLinear), then by its shards'
    targets, so a "Linear" group would take the fused layers whose shards have a
    type. Exact names leave them to their shards' group. The main group is left out
    when no module keeps the main scheme; it comes last, so compressed-tensors' "could
    not match" check (first matching target per module) finds every override target.
    """
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
    groups = {}
    if plan.eight_bit_targets:
        groups["group_1"] = QuantizationScheme(targets=list(plan.eight_bit_targets), weights=weights(8))
    for index, (kind, targets) in enumerate(plan.typed_targets.items(), start=2):
        groups[f"group_{index}"] = QuantizationScheme(targets=list(targets), weights=weight_args(kind))
    if plan.main_modules:
        targets = list(plan.main_modules) if plan.typed_targets else ["Linear"]
        groups["group_0"] = QuantizationScheme(targets=targets, weights=weights(plan.scheme.weight_bits), **main)
    return groups
