"""GGUF sensitivity and --recover on a tiny Llama, through the real llama.cpp toolchain.

The tiny model (2 blocks, 64 wide, random) carries the demo model's tokenizer:
llama.cpp's converter refuses BPE pre-tokenizers it does not know, such as the one
tests/conftest.py trains. Its 64-wide rows fit only llama.cpp's 32-block types, so the
variants are Q4_0 (plus Q8_0 overrides). Skips without `quantship setup llama.cpp`
(fails under CI); e2e because it drives the real llama.cpp binaries.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from gguf import GGUFReader

from quantship.evaluate.baseline import BaselineOptions, run_baseline
from quantship.formats.gguf_files import model_gguf
from quantship.formats.identify import identify
from quantship.models.loading import load_causal_lm
from quantship.progress import stderr_console
from quantship.quantize.spec import VariantSpec
from quantship.quantize.variants import run_quantize
from quantship.rundir import RunDir, read_json
from quantship.stages.calibrate import CalibrationOptions, run_calibrate
from quantship.validate.baseline_data import load_baseline
from quantship.validate.sensitivity import block_sensitivity, variant_weights
from tests.support.budget import setup_budget
from tests.support.recover_options import LOOSE, SMALL
from tests.support.requires import requires
from tests.support.validate_runs import run_cli, scale_lm_head

pytestmark = [pytest.mark.e2e, requires("llama.cpp")]


@pytest.fixture(scope="module")
@setup_budget(600)  # baseline, calibration and a GGUF conversion of the tiny model
def gguf_run_template(demo_checkpoint, tmp_path_factory) -> RunDir:
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(str(demo_checkpoint))
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=False,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    checkpoint = tmp_path_factory.mktemp("gckpt") / "tiny"
    LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(checkpoint, safe_serialization=True)
    tokenizer.save_pretrained(checkpoint)
    scale_lm_head(checkpoint, 10.0)
    run = RunDir(tmp_path_factory.mktemp("gruns") / "tiny")
    run_baseline(
        checkpoint, run, BaselineOptions(window=32, stride=32, max_windows=3, batch_size=3, topk=4, max_new_tokens=6), stderr_console()
    )
    run_calibrate(checkpoint, run, CalibrationOptions(samples=8, seq_len=32), stderr_console())  # for the imatrix variant
    return run


@pytest.fixture
def gguf_run(gguf_run_template, tmp_path) -> RunDir:
    return RunDir(Path(shutil.copytree(gguf_run_template.root, tmp_path / "run")))


def _types(run, variant: str) -> dict[str, str]:
    path = model_gguf(run.root / "variants" / variant)
    return {t.name: t.tensor_type.name for t in GGUFReader(path).tensors}


def test_gguf_weights_map_back_to_the_checkpoint_and_a_q4_block_outranks_a_q8_block(gguf_run):
    spec = VariantSpec(name="g4", method="gguf", scheme="Q4_0", overrides=[{"pattern": r"model\.layers\.1\.", "precision": "8bit"}])
    [made] = run_quantize(gguf_run, [spec], stderr_console())
    assert made.ok, made.error
    types = _types(gguf_run, "g4")
    assert types["blk.0.attn_q.weight"] == "Q4_0" and types["blk.1.attn_q.weight"] == "Q8_0"

    baseline = load_baseline(gguf_run)
    weights = variant_weights(baseline.checkpoint, identify(gguf_run.stage_dir("variants/g4")), "float32")
    assert len(weights) == 2 * 7 and all(n.startswith("model.layers.") for n in weights)  # 7 Linear per block, no embeddings
    base = dict(load_causal_lm(baseline.checkpoint, "float32", "cpu").named_parameters())
    for name, weight in weights.items():  # q/k rows un-permuted: every weight lines up with the checkpoint's
        error = float((weight - base[name]).norm() / base[name].norm())
        assert error < (0.01 if ".layers.1." in name else 0.2), (name, error)

    ranking = block_sensitivity(baseline.checkpoint, weights, baseline.plan.input_ids[:1, :64], "float32")
    assert [r["layer"] for r in ranking] == ["model.layers.0", "model.layers.1"]
    assert ranking[0]["score"] > 5 * ranking[1]["score"] > 0
    assert ranking[0]["weight_relative_error"] > ranking[1]["weight_relative_error"]


def test_gguf_recover_keeps_the_most_sensitive_block_at_q8_0(gguf_run, monkeypatch, capsys, tmp_path):
    # with an importance matrix: imatrix.gguf beside model.gguf must not confuse the scorer or the sensitivity pass
    [made] = run_quantize(gguf_run, [VariantSpec(name="g4", method="gguf", scheme="Q4_0", imatrix=True)], stderr_console())
    assert made.ok, made.error
    assert (gguf_run.root / "variants" / "g4" / "imatrix.gguf").is_file()
    thresholds = tmp_path / "gate.yaml"
    thresholds.write_text(LOOSE)
    common = ["--run-dir", str(gguf_run.root), "--variant", "g4", "--thresholds", str(thresholds), *SMALL]
    assert run_cli(monkeypatch, capsys, *common)[0] == 0
    kl = read_json(gguf_run.root / "validation" / "g4.json")["checks"]["kl_mean"]["value"]
    assert kl > 0

    code, out, err = run_cli(monkeypatch, capsys, *common, "--max-kl-mean", f"{kl * 0.95:.8f}", "--recover",
                             "--blocks-per-step", "1", "--max-bits-per-weight", "32")
    record = read_json(gguf_run.root / "validation" / "g4.recovery.json")
    assert record["format"] == "gguf Q4_0" and record["precision"] == "8bit" and record["kept_type"] == "Q8_0"
    layers = record["sensitivity"]["layers"]
    assert sorted(x["layer"] for x in layers) == ["model.layers.0", "model.layers.1"] and layers[0]["score"] > 0
    [step] = record["steps"]
    assert step["quantize_status"] == "done", record
    kept = layers[0]["layer"].rsplit(".", 1)[1]
    assert step["variant"] == "g4-mp1" and step["kept_blocks"] == [layers[0]["layer"]]
    types = _types(gguf_run, "g4-mp1")
    matrices = {n: t for n, t in types.items() if n.startswith("blk.") and not n.endswith("norm.weight")}
    assert {t for n, t in matrices.items() if n.startswith(f"blk.{kept}.")} == {"Q8_0"}
    assert {t for n, t in matrices.items() if not n.startswith(f"blk.{kept}.")} == {"Q4_0"}
    manifest = read_json(gguf_run.root / "variants" / "g4-mp1" / "manifest.json")
    assert manifest["overrides"] == [{"pattern": layers[0]["pattern"], "precision": "8bit"}]
    assert (
        step["bits_per_weight"] == manifest["bits_per_weight"]
        > read_json(gguf_run.root / "variants" / "g4" / "manifest.json")["bits_per_weight"]
    )
    assert step["passed"] and record["recovered"] == "g4-mp1", (step, kl, err[-2000:])
    assert code == 0 and "recover g4: g4-mp1 passes" in out
    page = (gguf_run.root / "report.html").read_text()
    assert 'alt="sensitivity of g4"' in page and "blocks kept at Q8_0" in page and "g4-mp1 passes" in page
