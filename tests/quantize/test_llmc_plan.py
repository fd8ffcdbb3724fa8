"""Recipe planning without weights: schemes, group sizes, overrides, refusals."""

from __future__ import annotations

import pytest

from quantship.errors import InputError
from quantship.quantize.llmc_schemes import auto_group_size, build_recipe, config_groups, plan_variant
from quantship.quantize.spec import VariantSpec

# The demo model's shapes: 576 wide (not a multiple of 128), MLP 1536.
DEMO = {
    **{f"model.layers.{i}.self_attn.{p}_proj": 576 for i in range(2) for p in "qkvo"},
    **{f"model.layers.{i}.mlp.{p}_proj": 576 for i in range(2) for p in ("gate", "up")},
    **{f"model.layers.{i}.mlp.down_proj": 1536 for i in range(2)},
    "lm_head": 576,
}


def spec(**fields) -> VariantSpec:
    return VariantSpec(**{"name": "v", "method": "gptq", **fields})


def test_default_group_size_128_is_refused_on_576_wide_layers_with_the_fix():
    with pytest.raises(InputError) as caught:
        plan_variant(spec(), DEMO)
    message = caught.value.one_line()
    assert "group size 128 does not divide 12 quantized layers" in message
    assert "576 input columns" in message and "group_size: auto (picks 64 here)" in message


def test_auto_picks_the_largest_kernel_size_that_divides_every_quantized_layer():
    plan = plan_variant(spec(group_size="auto"), DEMO)
    assert plan.group_size == 64 and plan.notes == ["group_size auto picked 64: 128 does not divide every quantized layer"]
    assert auto_group_size("v", {"a": 1536, "b": 2048}) == 128
    assert auto_group_size("v", {"a": 96, "b": 1536}) == 32
    with pytest.raises(InputError, match="no kernel group size"):
        auto_group_size("v", {"a": 100})


def test_bf16_overrides_leave_the_odd_layers_out_of_the_divisibility_check():
    # only down_proj (1536) stays quantized: 128 divides it
    plan = plan_variant(spec(overrides=[{"pattern": r"(self_attn|gate_proj|up_proj)"}]), DEMO)
    assert plan.group_size == 128
    assert plan.main_modules == ["model.layers.0.mlp.down_proj", "model.layers.1.mlp.down_proj"]


def test_lm_head_is_always_kept_and_overrides_become_re_patterns():
    plan = plan_variant(
        spec(group_size=64, overrides=[{"pattern": r"layers\.0\.", "precision": "bf16"}, {"pattern": r"v_proj$", "precision": "8bit"}]),
        DEMO,
    )
    assert plan.ignore == ["lm_head", r"re:.*(?:layers\.0\.)"]
    assert plan.eight_bit_targets == [r"re:.*(?:v_proj$)"]
    # a layer both kept in bf16 and asked at 8 bits stays bf16
    assert plan.kept_8bit == ["model.layers.1.self_attn.v_proj"]
    assert "model.layers.0.self_attn.v_proj" in plan.kept_bf16 and "lm_head" in plan.kept_bf16


def test_recipe_has_a_w8_group_for_8bit_overrides_and_the_same_grid():
    plan = plan_variant(spec(group_size=64, symmetric=False, overrides=[{"pattern": "k_proj", "precision": "8bit"}]), DEMO)
    groups = config_groups(plan)
    main, eight = groups["group_0"], groups["group_1"]
    assert main.targets == ["Linear"] and eight.targets == ["re:.*(?:k_proj)"]
    assert (main.weights.num_bits, main.weights.group_size, main.weights.symmetric) == (4, 64, False)
    assert (eight.weights.num_bits, eight.weights.group_size, eight.weights.strategy) == (8, 64, "group")
    [modifier] = build_recipe(plan)
    assert type(modifier).__name__ == "GPTQModifier" and modifier.ignore == ["lm_head"]


@pytest.mark.parametrize(
    ("method", "scheme", "modifiers", "activations"),
    [
        ("rtn", None, ["QuantizationModifier"], None),
        ("awq", None, ["AWQModifier", "QuantizationModifier"], None),
        ("smoothquant-gptq", None, ["SmoothQuantModifier", "GPTQModifier"], ("int", 8, True)),
        ("fp8-dynamic", None, ["QuantizationModifier"], ("float", 8, True)),
        ("fp8-static", None, ["QuantizationModifier"], ("float", 8, False)),
    ],
)
def test_each_method_builds_its_llm_compressor_recipe(method, scheme, modifiers, activations):
    plan = plan_variant(VariantSpec(name="v", method=method, scheme=scheme, group_size=64 if method in ("rtn", "awq") else None), DEMO)
    recipe = build_recipe(plan)
    assert [type(m).__name__ for m in recipe] == modifiers
    group = config_groups(plan)["group_0"]
    acts = group.input_activations
    assert (None if acts is None else (acts.type, acts.num_bits, acts.dynamic)) == activations


def test_channel_wise_int4_with_group_size_minus_one():
    plan = plan_variant(spec(method="rtn", group_size=-1), DEMO)
    weights = config_groups(plan)["group_0"].weights
    assert plan.group_size is None and weights.strategy == "channel" and weights.group_size is None


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"scheme": "W3A16"}, "cannot produce scheme 'W3A16'"),
        ({"method": "fp8-dynamic", "group_size": 64}, "group_size does not apply"),
        ({"method": "smoothquant-gptq", "symmetric": False}, "symmetric only"),
        ({"method": "rtn", "act_order": True, "group_size": 64}, "act_order is a GPTQ option"),
        ({"imatrix": True, "group_size": 64}, "imatrix is a llama.cpp"),
        ({"group_size": 64, "overrides": [{"pattern": "no_such_layer"}]}, "matches no Linear layer"),
        ({"method": "smoothquant-gptq", "overrides": [{"pattern": "k_proj", "precision": "8bit"}]}, "already 8-bit"),
        ({"group_size": 64, "overrides": [{"pattern": "lm_head", "precision": "8bit"}]}, "8-bit lm_head"),
        ({"group_size": 64, "overrides": [{"pattern": "."}]}, "keep every layer out"),
        ({"group_size": 0}, "not a positive size"),
    ],
)
def test_impossible_requests_are_refused_with_a_fix(fields, expected):
    with pytest.raises(InputError, match=expected) as caught:
        plan_variant(spec(**fields), DEMO)
    assert caught.value.fix
