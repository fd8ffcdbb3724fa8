"""Per-tensor types on llm-compressor variants: recipe groups, a real GPTQ run read back, candidate math."""

from __future__ import annotations

import json
import re

import pytest
import torch
from safetensors.torch import load_file

from quantship.errors import InputError
from quantship.progress import stderr_console
from quantship.quantize.llmc_candidates import FUSED_SHARDS, bits_per_weight, candidate_types, fake_quantize, fused_name, parse_type
from quantship.quantize.llmc_schemes import config_groups, plan_variant
from quantship.quantize.spec import VariantSpec
from quantship.quantize.variants import run_quantize
from quantship.rundir import read_json

# The tiny Llama's Linear layers (tests/support/tiny_model.py): 64 wide, MLP 128.
TINY = {
    **{f"model.layers.{i}.self_attn.{p}_proj": 64 for i in range(2) for p in "qkvo"},
    **{f"model.layers.{i}.mlp.{p}_proj": 64 for i in range(2) for p in ("gate", "up")},
    **{f"model.layers.{i}.mlp.down_proj": 128 for i in range(2)},
    "lm_head": 64,
}
ASKED = {  # pattern -> type; the rest keeps the scheme's W4A16-g64
    r"^model\.layers\.0\.self_attn\.o_proj$": "W8A16",
    r"^model\.layers\.1\.self_attn\.[qkv]_proj$": "W4A16-g32",
    r"^model\.layers\.1\.mlp\.down_proj$": "W4A16-g32",
    r"^model\.layers\.0\.mlp\.(gate|up)_proj$": "bf16",
}
MIXED = VariantSpec(
    name="mixed", method="gptq", scheme="W4A16", group_size=64, overrides=[{"pattern": p, "type": t} for p, t in ASKED.items()]
)
EXPECTED = {name: next((t for p, t in ASKED.items() if re.search(p, name)), "W4A16-g64") for name in TINY} | {"lm_head": "bf16"}
# the layers vLLM builds from them: q/k/v and gate/up fused, and its layer classes
VLLM_CLASSES = {
    "qkv_proj": "QKVParallelLinear",
    "o_proj": "RowParallelLinear",
    "gate_up_proj": "MergedColumnParallelLinear",
    "down_proj": "RowParallelLinear",
}


def vllm_expected(per_module: dict[str, str]) -> dict[str, str]:
    found: dict[str, set[str]] = {}
    for name, kind in per_module.items():
        if name != "lm_head":
            found.setdefault(fused_name(name) or name, set()).add(kind)
    assert all(len(kinds) == 1 for kinds in found.values())
    return {layer: kinds.pop() for layer, kinds in found.items()}


def config_type(weights) -> str:
    """The type a QuantizationArgs (or its JSON) stands for: W<bits>A16 per channel, W<bits>A16-g<N> per group."""
    get = weights.get if isinstance(weights, dict) else lambda key: getattr(weights, key)
    strategy = str(getattr(get("strategy"), "value", get("strategy")))
    assert get("symmetric") and get("type") == "int" and strategy in ("group", "channel")
    return f"W{get('num_bits')}A16" + (f"-g{get('group_size')}" if strategy == "group" else "")


def _named(name: str, target: str) -> bool:
    return bool(re.match(target[3:], name)) if target.startswith("re:") else target == name


def vllm_layer_types(qconfig: dict) -> dict[str, str]:
    """Each layer vLLM builds, resolved from a quantization_config as vLLM's compressed-tensors loader does
    (vllm/model_executor/layers/quantization/compressed_tensors/utils.py): shards of a fused layer must agree
    on `ignore`; then the first target naming the layer (exact or `re:`), else the first class target
    contained in its class name ("Linear" in "QKVParallelLinear"), else its shards' first targets."""
    targets = [(t, config_type(g["weights"])) for g in qconfig["config_groups"].values() for t in g["targets"]]

    def by_name(name: str) -> str | None:
        return next((kind for t, kind in targets if _named(name, t)), None)

    found = {}
    for layer in vllm_expected(EXPECTED):
        parent, _, leaf = layer.rpartition(".")
        shards = [f"{parent}.{s}" for s in FUSED_SHARDS.get(leaf, (leaf,))]
        ignored = {any(_named(s, t) for t in qconfig["ignore"]) for s in shards}
        assert len(ignored) == 1, f"vLLM refuses {layer}: its shards disagree on ignore"
        if ignored.pop():
            found[layer] = "bf16"
            continue
        by_class = next((k for t, k in targets if not t.startswith("re:") and t.lower() in VLLM_CLASSES[leaf].lower()), None)
        by_shards = [by_name(s) for s in shards] if leaf in FUSED_SHARDS else [None]
        found[layer] = by_name(layer) or by_class or (by_shards[0] if all(by_shards) else None)
    return found


def types_from_tensors(tensors: dict[str, torch.Tensor]) -> dict[str, str]:
    """Each Linear layer's type from the written tensors: packed code width and scale count."""
    found = {}
    for name in TINY:
        if f"{name}.weight" in tensors:
            assert f"{name}.weight_scale" not in tensors and tensors[f"{name}.weight"].dtype == torch.bfloat16
            found[name] = "bf16"
            continue
        out, columns = tensors[f"{name}.weight_shape"].tolist()
        packed, scale = tensors[f"{name}.weight_packed"], tensors[f"{name}.weight_scale"]
        assert packed.dtype == torch.int32 and packed.shape[0] == out and scale.shape[0] == out
        assert scale.dtype == torch.bfloat16 and f"{name}.weight_zero_point" not in tensors  # symmetric
        bits = packed.shape[1] * 32 // columns
        found[name] = "W8A16" if bits == 8 and scale.shape[1] == 1 else f"W{bits}A16-g{columns // scale.shape[1]}"
    return found


def _as_written(groups: dict, ignore: list[str]) -> dict:
    return {"config_groups": {k: g.model_dump(mode="json") for k, g in groups.items()}, "ignore": ignore}


def test_type_overrides_become_one_config_group_per_type_and_bf16_goes_to_ignore():
    plan = plan_variant(MIXED, TINY)
    groups = config_groups(plan)
    main = [n for n, t in EXPECTED.items() if t == "W4A16-g64"]
    assert {k: (g.targets, config_type(g.weights)) for k, g in groups.items()} == {
        "group_2": ([r"re:.*(?:^model\.layers\.0\.self_attn\.o_proj$)"], "W8A16"),
        "group_3": ([r"re:.*(?:^model\.layers\.1\.self_attn\.[qkv]_proj$)", r"re:.*(?:^model\.layers\.1\.mlp\.down_proj$)"], "W4A16-g32"),
        "group_0": (main, "W4A16-g64"),  # named exactly, not "Linear", and last
    }
    assert plan.ignore == ["lm_head", r"re:.*(?:^model\.layers\.0\.mlp\.(gate|up)_proj$)"]
    assert plan.kept_bf16 == ["lm_head", "model.layers.0.mlp.gate_proj", "model.layers.0.mlp.up_proj"]
    assert plan.kept_typed == {
        "W4A16-g32": [n for n in sorted(TINY) if EXPECTED[n] == "W4A16-g32"],
        "W8A16": ["model.layers.0.self_attn.o_proj"],
    }
    assert plan.main_modules == main and len(main) == 7

    # as vLLM reads it: with a "Linear" main group the fused qkv_proj of layer 1 would lose its type
    assert vllm_layer_types(_as_written(groups, plan.ignore)) == vllm_expected(EXPECTED)
    groups["group_0"].targets = ["Linear"]
    assert vllm_layer_types(_as_written(groups, plan.ignore))["model.layers.1.self_attn.qkv_proj"] == "W4A16-g64"


def _applied_types(plan) -> dict[str, str]:
    """compressed-tensors' own resolution of the plan's groups on a tiny Llama built in process."""
    from compressed_tensors.quantization import QuantizationConfig, apply_quantization_config
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2
    )
    model = LlamaForCausalLM(config)
    apply_quantization_config(model, QuantizationConfig(config_groups=config_groups(plan), ignore=plan.ignore), show_progress=False)
    linears = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    assert set(linears) == set(TINY)
    return {n: config_type(m.quantization_scheme.weights) if hasattr(m, "quantization_scheme") else "bf16" for n, m in linears.items()}


def test_compressed_tensors_resolves_each_module_to_the_type_asked():
    assert _applied_types(plan_variant(MIXED, TINY)) == EXPECTED
    # an 8-bit precision override next to the types keeps its own group
    eight = {"pattern": r"layers\.1\.self_attn\.o_proj", "precision": "8bit"}
    spec = VariantSpec(**{**MIXED.model_dump(), "overrides": [*MIXED.model_dump()["overrides"], eight]})
    assert _applied_types(plan_variant(spec, TINY)) == EXPECTED | {"model.layers.1.self_attn.o_proj": "W8A16-g64"}


def test_precedence_over_a_linear_group_in_compressed_tensors():
    # no `type` overrides: main targets "Linear", the 8-bit `re:` group wins over it (existing behaviour)
    spec = VariantSpec(name="v", method="gptq", group_size=64, overrides=[{"pattern": r"o_proj$", "precision": "8bit"}])
    plan = plan_variant(spec, TINY)
    assert config_groups(plan)["group_0"].targets == ["Linear"]
    assert _applied_types(plan) == {n: "W8A16-g64" if "o_proj" in n else "W4A16-g64" for n in TINY} | {"lm_head": "bf16"}


def test_allocator_style_spec_one_override_per_module_needs_no_main_group():
    # every Linear layer named exactly, as the per-tensor allocation writes them; fused shards share a type
    by_leaf = {
        0: {"q": "W8A16", "k": "W8A16", "v": "W8A16", "o": "W4A16-g64", "gate": "bf16", "up": "bf16", "down": "W4A16-g128"},
        1: {"q": "W4A16-g32", "k": "W4A16-g32", "v": "W4A16-g32", "o": "bf16", "gate": "W4A16-g32", "up": "W4A16-g32", "down": "W8A16"},
    }
    asked = {name: by_leaf[int(name.split(".")[2])][name.rpartition(".")[2].removesuffix("_proj")] for name in TINY if name != "lm_head"}
    spec = VariantSpec(name="alloc", method="gptq", overrides=[{"pattern": f"^{re.escape(n)}$", "type": t} for n, t in asked.items()])
    plan = plan_variant(spec, TINY)
    groups = config_groups(plan)
    assert plan.main_modules == [] and "group_0" not in groups
    assert _applied_types(plan) == {**asked, "lm_head": "bf16"}
    assert vllm_layer_types(_as_written(groups, plan.ignore)) == vllm_expected(asked)


@pytest.mark.parametrize(
    ("overrides", "method", "expected"),
    [
        ([{"pattern": "q_proj", "type": "Q4_K"}], "gptq", "'Q4_K' is not an llm-compressor tensor type; use W4A16-g32"),
        ([{"pattern": "q_proj", "type": "W4A16"}], "gptq", "(name its group size, e.g. W4A16-g128)"),
        (
            [{"pattern": r"layers\.0\.self_attn\.o_proj", "type": "W4A16-g128"}],
            "gptq",
            "asks W4A16-g128 for model.layers.0.self_attn.o_proj, whose 64 input columns are not a multiple of 128; "
            "give it one of W4A16-g32, W4A16-g64, W8A16, bf16",
        ),
        (
            [{"pattern": "o_proj", "type": "W8A16"}, {"pattern": r"layers\.0\.", "type": "W4A16-g32"}],
            "gptq",
            r"model.layers.0.self_attn.o_proj is matched by overrides 'o_proj' (W8A16) and 'layers\\.0\\.' (W4A16-g32)",
        ),
        (
            [{"pattern": r"layers\.0\.", "precision": "bf16"}, {"pattern": "o_proj", "type": "w8a16"}],
            "gptq",
            "matched by type override 'o_proj' (W8A16) and by precision override",
        ),
        (
            [{"pattern": r"layers\.0\.self_attn\.v_proj", "type": "W8A16"}],
            "gptq",
            "vLLM loads model.layers.0.self_attn.qkv_proj as one fused layer with one scheme, the overrides give its shards "
            r"q_proj W4A16-g64, k_proj W4A16-g64, v_proj W8A16; give them one type (one override such as "
            r"model\.layers\.0\.self_attn\.(q_proj|k_proj|v_proj)$)",
        ),
        ([{"pattern": r"layers\.1\.mlp\.up_proj", "type": "bf16"}], "gptq", "gate_up_proj as one fused layer"),
        ([{"pattern": "lm_head", "type": "W8A16"}], "gptq", "asks W8A16 for lm_head"),
        ([{"pattern": "o_proj", "type": "W8A16"}], "fp8-dynamic", "type W8A16 is for methods rtn and gptq, not fp8-dynamic"),
        ([{"pattern": "o_proj", "type": "W8A16"}], "awq", "type W8A16 is for methods rtn and gptq, not awq"),
        ([{"pattern": "no_such_layer", "type": "W8A16"}], "gptq", "matches no Linear layer"),
    ],
)
def test_impossible_types_are_one_line_input_errors_with_the_fix(overrides, method, expected):
    spec = VariantSpec(name="v", method=method, group_size=64 if method in ("gptq", "awq") else None, overrides=overrides)
    with pytest.raises(InputError) as caught:
        plan_variant(spec, TINY)
    line = caught.value.one_line()
    assert expected in line and "\n" not in line and caught.value.fix


def test_bf16_type_works_with_every_method_and_types_keep_precision_behaviour_apart():
    plan = plan_variant(VariantSpec(name="v", method="fp8-dynamic", overrides=[{"pattern": "down_proj", "type": "BF16"}]), TINY)
    assert plan.ignore == ["lm_head", "re:.*(?:down_proj)"] and plan.typed_targets == {}
    assert config_groups(plan)["group_0"].targets == ["Linear"]
    # a `type` override is never read as its (default) precision: it is not ignored
    plan = plan_variant(VariantSpec(name="v", method="rtn", group_size=64, overrides=[{"pattern": "down_proj", "type": "W8A16"}]), TINY)
    assert plan.ignore == ["lm_head"] and plan.eight_bit_targets == [] and plan.typed_targets == {"W8A16": ["re:.*(?:down_proj)"]}


def test_candidate_types_spelling_and_fused_names():
    assert candidate_types(64) == ["W4A16-g32", "W4A16-g64", "W8A16", "bf16"]
    assert candidate_types(384) == ["W4A16-g32", "W4A16-g64", "W4A16-g128", "W8A16", "bf16"]
    assert candidate_types(96) == ["W4A16-g32", "W8A16", "bf16"]
    assert candidate_types(100) == ["W8A16", "bf16"]
    assert [(t.name, t.bits, t.group_size) for t in map(parse_type, ["w4a16-G64", " W8A16", "BF16"])] == [
        ("W4A16-g64", 4, 64),
        ("W8A16", 8, None),
        ("bf16", 16, None),
    ]
    assert fused_name("model.layers.3.self_attn.k_proj") == "model.layers.3.self_attn.qkv_proj"
    assert fused_name("model.layers.3.mlp.up_proj") == "model.layers.3.mlp.gate_up_proj"
    assert fused_name("model.layers.3.mlp.down_proj") is None and fused_name("lm_head") is None
    assert bits_per_weight("W4A16-g128", 4096) == 4.125 and bits_per_weight("W8A16", 4096) == 8 + 16 / 4096
    assert bits_per_weight("bf16", 4096) == 16
    assert bits_per_weight("W4A16-g32", 100 * 32, dtype_bits=32) == 5  # fp32 checkpoint: fp32 scales
    with pytest.raises(InputError, match="does not fit a layer with 96 input columns"):
        bits_per_weight("W4A16-g64", 96)


def test_fake_quantize_error_grows_with_coarser_types():
    torch.manual_seed(0)
    weight = torch.randn(256, 512, dtype=torch.bfloat16)

    def error(kind: str) -> float:
        return (fake_quantize(weight, kind).float() - weight.float()).pow(2).mean().item()

    errors = [error(k) for k in ["bf16", "W8A16", "W4A16-g32", "W4A16-g64", "W4A16-g128"]]
    assert errors[0] == 0 and errors == sorted(errors) and len(set(errors)) == 5
    assert errors[2] > 50 * errors[1]  # 16 levels against 256
    quantized = fake_quantize(weight, "W4A16-g32")
    assert quantized.dtype == torch.bfloat16
    assert max(len(torch.unique(g)) for g in quantized.reshape(-1, 32)) <= 16


def _dequantized(folder):
    from transformers import AutoModelForCausalLM, CompressedTensorsConfig

    model = AutoModelForCausalLM.from_pretrained(folder, quantization_config=CompressedTensorsConfig(dequantize=True))
    return {n: m.weight.data for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}


def _predicted_linear_bits(types: dict[str, str], original: dict[str, torch.Tensor]) -> float:
    """bits_per_weight of each quantized layer, weighted by its size, as the backend averages them."""
    sizes = {n: original[f"{n}.weight"].numel() for n, t in types.items() if t != "bf16"}
    return sum(bits_per_weight(types[n], TINY[n]) * size for n, size in sizes.items()) / sum(sizes.values())


def test_mixed_gptq_variant_writes_each_layer_as_asked(tiny_run, tiny_checkpoint_template):
    [result] = run_quantize(tiny_run, [MIXED], stderr_console())
    assert result.status == "done", result.error
    folder = tiny_run.stage_dir("variants/mixed")
    qconfig = json.loads((folder / "config.json").read_text())["quantization_config"]
    tensors = load_file(str(folder / "model.safetensors"))
    assert types_from_tensors(tensors) == EXPECTED
    assert vllm_layer_types(qconfig) == vllm_expected(EXPECTED)
    assert sorted(qconfig["ignore"]) == ["lm_head", "model.layers.0.mlp.gate_proj", "model.layers.0.mlp.up_proj"]

    # the backend's measured bits are what bits_per_weight predicts layer by layer
    original = load_file(str(tiny_checkpoint_template / "model.safetensors"))
    details = read_json(folder / "manifest.json")["details"]
    assert details["quantized_linear_bits_per_weight"] == pytest.approx(_predicted_linear_bits(EXPECTED, original), abs=1e-4)
    assert details["plan"]["typed_targets"] == {t: [f"re:.*(?:{p})" for p, k in ASKED.items() if k == t] for t in ("W8A16", "W4A16-g32")}

    # the 4-bit groups got GPTQ, not RTN: on the type's grid, yet not the round-to-nearest weight
    weights = _dequantized(folder)
    for name in ("model.layers.1.mlp.down_proj", "model.layers.1.self_attn.q_proj"):
        assert max(len(torch.unique(g)) for g in weights[name].reshape(-1, 32)) <= 16
        assert not torch.equal(weights[name], fake_quantize(original[f"{name}.weight"], "W4A16-g32"))
    assert torch.equal(weights["model.layers.0.mlp.gate_proj"], original["model.layers.0.mlp.gate_proj.weight"])


@pytest.mark.parametrize(("scheme", "group_size", "kind"), [("W4A16", 32, "W4A16-g32"), ("W8A16", -1, "W8A16")])
def test_uniform_rtn_variant_matches_fake_quantize_and_bits_per_weight(tiny_run, tiny_checkpoint_template, scheme, group_size, kind):
    spec = VariantSpec(name="uniform", method="rtn", scheme=scheme, group_size=group_size)
    [result] = run_quantize(tiny_run, [spec], stderr_console())
    assert result.status == "done", result.error
    folder = tiny_run.stage_dir("variants/uniform")
    original = load_file(str(tiny_checkpoint_template / "model.safetensors"))
    expected = {n: kind for n in TINY} | {"lm_head": "bf16"}
    assert types_from_tensors(load_file(str(folder / "model.safetensors"))) == expected
    details = read_json(folder / "manifest.json")["details"]
    assert details["quantized_linear_bits_per_weight"] == pytest.approx(_predicted_linear_bits(expected, original), abs=1e-4)
    # llm-compressor's RTN wrote exactly the weights fake_quantize computes
    weights = _dequantized(folder)
    for name in TINY:
        if name != "lm_head":
            assert torch.equal(weights[name], fake_quantize(original[f"{name}.weight"], kind)), name
