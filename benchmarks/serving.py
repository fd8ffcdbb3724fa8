"""Decode speed of bf16 vs 4-bit weights on the same serving stack, against the
memory-bandwidth bound measured on this machine.

Serves both models at once (each its own server), then measures batch-1 decode in
ABBA turns with `quantship.bench` (interleaving cancels drift on a shared machine),
and probes memory read bandwidth before the servers start. Decode tokens/s is
1 / median time per output token; the bound is bandwidth / bytes of weights read per
token. Writes JSON (default benchmarks/results/serving.json) and prints a summary.
No assertions: figures only.

Default models, both on llama.cpp: the demo's 4-bit Q4_1 GGUF and the same weights
widened to a BF16 GGUF by llama-quantize (cached next to the demo checkpoint). Any
two models that the same stack serves can be passed instead:

    python benchmarks/serving.py [--baseline PATH --variant PATH] [--requests 12] [--max-tokens 128]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from quantship.bench.driver import run_bench  # noqa: E402
from quantship.bench.models import BenchSettings, Target  # noqa: E402
from quantship.bench.prompts import builtin_prompts  # noqa: E402
from quantship.bench.provenance import provenance  # noqa: E402
from quantship.bench.roofline import decode_bound, read_bandwidth, weight_bytes_per_token  # noqa: E402
from quantship.rundir import atomic_write_json  # noqa: E402


def bf16_gguf(q4_gguf: Path, cache: Path) -> Path:
    """The demo model as a BF16 GGUF, made once with `llama-quantize --allow-requantize`.

    The demo checkpoint is the exact dequantization of this Q4_1 file, so widening
    the file itself gives the same weights with the GGUF's own tokenizer metadata.
    (llama.cpp's HF converter reads the rebuilt tokenizer.json as SentencePiece and
    writes a GGUF that llama-server cannot tokenize with; see docs/bench.md.)
    """
    from quantship.envs import llamacpp

    out = cache / f"{q4_gguf.stem.rsplit('.', 1)[0]}.BF16.gguf"
    if out.exists():
        return out
    tmp = out.with_name(f".{out.name}.tmp")
    argv = [str(llamacpp.load().llama_quantize), "--allow-requantize", str(q4_gguf), str(tmp), "BF16"]
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise SystemExit(f"llama-quantize failed ({done.returncode}): {done.stderr[-2000:]}")
    os.replace(tmp, out)
    return out


def default_models() -> tuple[Path, Path]:
    from quantship.models.demo import locate_demo_gguf, materialise_demo_model

    q4 = locate_demo_gguf()
    return bf16_gguf(q4, materialise_demo_model().parent), q4


def stack_of(model: Path) -> str:
    from quantship.serve.target import from_model_path

    return "llama.cpp" if from_model_path(model).format == "gguf" else "vllm-cpu"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", type=Path, help="bf16 model (default: the demo model as BF16 GGUF)")
    parser.add_argument("--variant", type=Path, help="4-bit model (default: the demo's Q4_1 GGUF)")
    parser.add_argument("--requests", type=int, default=12, help="measured requests per model")
    parser.add_argument("--max-tokens", type=int, default=128, help="tokens generated per request")
    parser.add_argument("--rounds", type=int, default=4, help="ABBA rounds")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "serving.json")
    args = parser.parse_args()

    from quantship.serve import start_server
    from quantship.serve.launch import ServeOptions

    if (args.baseline is None) != (args.variant is None):
        parser.error("pass both --baseline and --variant, or neither for the demo pair")
    baseline, variant = (args.baseline, args.variant) if args.baseline else default_models()
    stacks = {stack_of(baseline), stack_of(variant)}
    if len(stacks) != 1:
        parser.error(f"the two models need different stacks ({', '.join(sorted(stacks))}); compare on one stack")
    (stack,) = stacks

    print("probing memory read bandwidth ...", flush=True)
    bandwidth = read_bandwidth()
    best_bandwidth = max(bandwidth["torch_sum_bytes_per_s"], bandwidth["numpy_sum_1thread_bytes_per_s"])
    settings = BenchSettings(
        mode="concurrency",
        levels=[1.0],
        requests=args.requests,
        warmup=2,
        max_tokens=args.max_tokens,
        ignore_eos=True,
        rounds=args.rounds,
        seed=0,
        timeout_s=600.0,
        prompts="builtin",
        prompt_count=len(builtin_prompts()),
    )
    run_dir = ROOT / "runs" / "benchmark-serving"
    labels = {"bf16": baseline, "4-bit": variant}
    servers = []
    try:
        for label, model in labels.items():
            print(f"starting {stack} for {label}: {model}", flush=True)
            servers.append(
                start_server(
                    model=model, stack=stack, options=ServeOptions(port=0), run_dir=run_dir, name=f"bench-{label}"
                )
            )
        targets = [
            Target(label=label, base_url=s.base_url, model=s.served_model_name) for label, s in zip(labels, servers, strict=True)
        ]
        report, _ = asyncio.run(run_bench(targets, builtin_prompts(), settings))
    finally:
        for server in servers:
            server.stop()

    models = {}
    for summary in report.summaries:
        model = labels[summary.endpoint]
        per_token = weight_bytes_per_token(model)
        decode = 1000.0 / summary.tpot_ms.p50 if summary.tpot_ms else None
        bound = decode_bound(best_bandwidth, per_token)
        models[summary.endpoint] = {
            "path": str(model),
            "weight_bytes_per_token": per_token,
            "decode_tokens_per_s": decode,
            "tpot_ms": summary.tpot_ms.model_dump() if summary.tpot_ms else None,
            "ttft_ms_p50": summary.ttft_ms.p50 if summary.ttft_ms else None,
            "output_tokens_per_s": summary.output_tokens_per_s,
            "requests_ok": summary.ok,
            "errors": summary.errors,
            "bandwidth_bound_tokens_per_s": bound,
            "fraction_of_bound": decode / bound if decode else None,
        }
    b16, q4 = models["bf16"], models["4-bit"]
    result = {
        "stack": stack,
        **provenance(read_bandwidth=bandwidth, bandwidth_used_for_bound_bytes_per_s=best_bandwidth),
        "settings": settings.model_dump(),
        "models": models,
        "speedup_4bit_over_bf16": (q4["decode_tokens_per_s"] / b16["decode_tokens_per_s"])
        if q4["decode_tokens_per_s"] and b16["decode_tokens_per_s"]
        else None,
        "bytes_ratio_bf16_over_4bit": b16["weight_bytes_per_token"] / q4["weight_bytes_per_token"],
    }
    atomic_write_json(args.out, result)
    print(f"read bandwidth {best_bandwidth / 1e9:.1f} GB/s ({stack})")
    for label, m in models.items():
        print(
            f"{label:>6}: {m['decode_tokens_per_s']:.1f} decode tok/s, bound {m['bandwidth_bound_tokens_per_s']:.1f} "
            f"({m['fraction_of_bound']:.0%}), {m['weight_bytes_per_token'] / 1e6:.0f} MB/token"
        )
    print(
        f"4-bit / bf16 decode speed: {result['speedup_4bit_over_bf16']:.2f}x "
        f"(bytes ratio {result['bytes_ratio_bf16_over_4bit']:.2f}x); written to {args.out}"
    )


if __name__ == "__main__":
    main()
