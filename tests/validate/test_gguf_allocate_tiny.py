"""Per-tensor allocation of a GGUF variant on a tiny Llama, through the real llama.cpp toolchain and gate.

The tiny model (2 blocks, 64 wide, random) carries the demo model's tokenizer:
llama.cpp's converter refuses BPE pre-tokenizers it does not know, such as the one
tests/conftest.py trains. Its 64- and 128-long rows fit only llama.cpp's 32-block
types, so no K-type may ever be proposed. Skips without `quantship setup llama.cpp`
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
from quantship.progress import stderr_console
from quantship.quantize.spec import VariantSpec
from quantship.quantize.variants import run_quantize
from quantship.rundir import RunDir, read_json
from quantship.stages.calibrate import CalibrationOptions, run_calibrate
from tests.support.budget import setup_budget
from tests.support.recover_options import LOOSE, SMALL
from tests.support.requires import requires
from tests.support.validate_runs import run_cli, scale_lm_head

pytestmark = [pytest.mark.e2e, requires("llama.cpp")]
K_TYPES = {"Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"}


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


def _failing_q4(gguf_run, monkeypatch, capsys, tmp_path):
    [made] = run_quantize(gguf_run, [VariantSpec(name="g4", method="gguf", scheme="Q4_0", imatrix=True)], stderr_console())
    assert made.ok, made.error
    thresholds = tmp_path / "gate.yaml"
    thresholds.write_text(LOOSE)
    common = ["--run-dir", str(gguf_run.root), "--variant", "g4", "--thresholds", str(thresholds), *SMALL,
              "--sensitivity-tokens", "64"]
    assert run_cli(monkeypatch, capsys, *common)[0] == 0
    kl = read_json(gguf_run.root / "validation" / "g4.json")["checks"]["kl_mean"]["value"]
    assert kl > 0
    return common, kl


def test_target_gate_builds_a_per_tensor_mix_that_passes_and_its_file_holds_the_chosen_types(gguf_run, monkeypatch, capsys,
                                                                                               tmp_path):
    common, kl = _failing_q4(gguf_run, monkeypatch, capsys, tmp_path)
    code, out, err = run_cli(monkeypatch, capsys, *common, "--max-kl-mean", f"{kl * 0.5:.8f}", "--recover", "--target", "gate",
                             "--select", "smallest-passing")
    record = read_json(gguf_run.root / "validation" / "g4.allocation.json")
    assert record["mode"] == "gate" and record["backend"] == "gguf" and 1 <= record["gate_runs"] <= 3, record["outcome"]
    assert record["recovered"], (record["outcome"], err[-3000:])
    chosen = next(r for r in record["runs"] if r["variant"] == record["recovered"])
    # 14 block matrices + token_embd + output, each with a type; never a K-type on these rows
    assert len(chosen["types"]) == 16 and not set(chosen["types"].values()) & K_TYPES
    sensitivity = read_json(gguf_run.root / record["sensitivity"]["file"])
    for name, entry in sensitivity["tensors"].items():
        assert not set(entry["predicted_kl"]) & K_TYPES, name
        assert entry["predicted_kl"]["BF16"] == 0.0 and entry["measured_kl"] > 0
    # the built file, read back, holds exactly the chosen type on every tensor; sizes were predicted exactly
    written = _types(gguf_run, record["recovered"])
    manifest = read_json(gguf_run.root / "variants" / record["recovered"] / "manifest.json")
    by_module = {o["pattern"]: o["type"] for o in manifest["overrides"]}
    assert len(by_module) == 16
    gguf_name = {"model.embed_tokens.weight": "token_embd.weight", "lm_head.weight": "output.weight",
                 **{f"model.layers.{b}.{m}.weight": f"blk.{b}.{g}.weight" for b in range(2) for m, g in [
                     ("self_attn.q_proj", "attn_q"), ("self_attn.k_proj", "attn_k"), ("self_attn.v_proj", "attn_v"),
                     ("self_attn.o_proj", "attn_output"), ("mlp.gate_proj", "ffn_gate"), ("mlp.up_proj", "ffn_up"),
                     ("mlp.down_proj", "ffn_down")]}}
    assert {gguf_name[n]: t for n, t in chosen["types"].items()} == {n: t for n, t in written.items() if n in gguf_name.values()}
    assert chosen["bits_per_weight"] == pytest.approx(chosen["predicted_bits_per_weight"], abs=1e-3)
    assert chosen["kl_mean"] <= kl * 0.5 and chosen["passed"]
    assert code == 0 and f"allocate g4: {record['recovered']} passes" in out
    assert read_json(gguf_run.root / "validation" / "selected.json")["selected"] == record["recovered"]
    page = (gguf_run.root / "report.html").read_text()
    assert f'alt="tensor map of {record["recovered"]}"' in page and 'alt="bits per weight vs KL mean"' in page


def test_budget_spends_the_bits_where_the_measured_sensitivity_is_and_a_rerun_resumes(gguf_run, monkeypatch, capsys, tmp_path):
    common, kl = _failing_q4(gguf_run, monkeypatch, capsys, tmp_path)
    common += ["--max-kl-mean", f"{kl * 0.5:.8f}"]  # g4 fails, so the allocation runs
    budget = read_json(gguf_run.root / "variants" / "g4" / "manifest.json")["bits_per_weight"] + 1.0
    run_cli(monkeypatch, capsys, *common, "--recover", "--max-bits-per-weight", f"{budget:.4f}")
    record = read_json(gguf_run.root / "validation" / "g4.allocation.json")
    [only] = record["runs"]
    assert record["mode"] == "budget" and only["bits_per_weight"] <= budget
    sensitivity = read_json(gguf_run.root / record["sensitivity"]["file"])["tensors"]
    # no uniform type that fits in the same bits predicts less error than the mix
    chosen_bits = sum(sensitivity[n]["bits"][t] for n, t in only["types"].items())
    for uniform in ("Q4_0", "IQ4_NL", "Q4_1", "Q5_0", "Q5_1", "Q8_0"):
        if sum(e["bits"][uniform] for e in sensitivity.values()) <= chosen_bits:
            assert only["predicted_kl"] <= sum(e["predicted_kl"][uniform] for e in sensitivity.values()) + 1e-12, uniform
    assert len(set(only["types"].values())) > 1  # a mix, not one type
    assert only["kl_mean"] < read_json(gguf_run.root / "validation" / "g4.json")["checks"]["kl_mean"]["value"]

    # interrupted: a record with half its tensors measured is finished, not started again
    path = gguf_run.root / record["sensitivity"]["file"]
    saved = read_json(path)
    kept = sorted(saved["tensors"])[:8]
    for name in set(saved["tensors"]) - set(kept):
        saved["tensors"][name] = {"output_error": {}}
    from quantship.rundir import atomic_write_json

    atomic_write_json(path, saved)
    run_cli(monkeypatch, capsys, *common, "--recover", "--max-bits-per-weight", f"{budget:.4f}")
    resumed = read_json(path)["tensors"]
    assert all(resumed[n]["measured_kl"] == read_json(path)["tensors"][n]["measured_kl"] for n in kept)
    assert all("measured_kl" in e for e in resumed.values())
