"""Perplexity throughput: quantship's evaluator vs a plain transformers loop, same windows.

Both score the same demo-model windows in float32 on this machine, interleaved
(A, B, A, B, ...) so load changes hit both alike. quantship additionally keeps the
top-k distribution per position (what KL divergence needs later); the plain loop
computes only the loss. Prints a table and writes benchmarks/results/perplexity.json.

    python benchmarks/perplexity.py [--windows 16] [--window 512] [--repeats 3]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from pathlib import Path

import torch

from quantship.bench.provenance import provenance
from quantship.data.sources import TextSource, load_documents
from quantship.data.tokens import encode_document, separator_id, token_stream
from quantship.evaluate.perplexity import hf_logits_fn, plan_windows, score_windows
from quantship.models.demo import materialise_demo_model
from quantship.rundir import atomic_write_json


def plain_transformers(model, windows: torch.Tensor) -> tuple[float, float]:
    """The loop most people write: one window at a time, model(labels=...).loss."""
    nll, count = 0.0, 0
    started = time.perf_counter()
    with torch.no_grad():
        for row in windows:
            loss = model(input_ids=row[None], labels=row[None]).loss
            nll += float(loss) * (row.numel() - 1)
            count += row.numel() - 1
    return math.exp(nll / count), time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=16)
    parser.add_argument("--window", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--topk", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "perplexity.json")
    args = parser.parse_args()

    from transformers import AutoModelForCausalLM, AutoTokenizer

    checkpoint = materialise_demo_model()
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32).eval()
    documents = load_documents(TextSource.parse("builtin:evaluation"))
    stream = token_stream([encode_document(tokenizer, d, chat=False) for d in documents], separator_id(tokenizer))
    plan = plan_windows(stream, args.window, args.window, args.windows)
    tokens = plan.input_ids.numel()

    plain_ppl, quantship_ppl = None, None
    plain_times, quantship_times = [], []
    score_windows(hf_logits_fn(model), plan_windows(stream, args.window, args.window, 1))  # warm-up
    for _ in range(args.repeats):
        plain_ppl, seconds = plain_transformers(model, plan.input_ids)
        plain_times.append(seconds)
        result = score_windows(hf_logits_fn(model), plan, args.batch_size, args.topk)
        quantship_ppl = result.perplexity
        quantship_times.append(result.seconds)

    figures = {
        **provenance(torch=torch.__version__, torch_threads=torch.get_num_threads()),
        "model": "SmolLM2-135M-Instruct (demo), float32, CPU" if not torch.cuda.is_available() else "demo, float32",
        "windows": args.windows,
        "window": args.window,
        "tokens": tokens,
        "repeats": args.repeats,
        "plain_transformers": {
            "perplexity": plain_ppl,
            "median_s": statistics.median(plain_times),
            "tokens_per_s": tokens / statistics.median(plain_times),
            "runs_s": plain_times,
        },
        "quantship": {
            "perplexity": quantship_ppl,
            "median_s": statistics.median(quantship_times),
            "tokens_per_s": tokens / statistics.median(quantship_times),
            "runs_s": quantship_times,
            "batch_size": args.batch_size,
            "topk_kept": args.topk,
        },
    }
    figures["speedup"] = figures["quantship"]["tokens_per_s"] / figures["plain_transformers"]["tokens_per_s"]
    atomic_write_json(args.out, figures)
    print(f"{'':22}{'tok/s':>10}{'perplexity':>12}")
    for name in ("plain_transformers", "quantship"):
        print(f"{name:22}{figures[name]['tokens_per_s']:>10.1f}{figures[name]['perplexity']:>12.4f}")
    print(f"quantship / plain: {figures['speedup']:.2f}x  -> {args.out}")


if __name__ == "__main__":
    main()
