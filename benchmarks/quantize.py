"""Variants of one run side by side: size, bits/weight, quantize time, peak RSS, perplexity.

Every variant and the baseline checkpoint are scored in this same run, by the same
code (quantship.evaluate.perplexity) on the baseline's stored evaluation windows, so
the perplexities compare directly. compressed-tensors and NF4 variants load through
transformers; GGUF variants are scored with llama-cpp-python's logits when it is
installed, otherwise reported as skipped with the reason. Prints a table and writes
benchmarks/results/quantize.json.

Caveat for the demo model: its weights come from a Q4_1 GGUF, so they already lie on a
4-bit, block-32, asymmetric grid; Q4_1 and any g32 asymmetric min-max 4-bit variant
reproduce them almost exactly. Such a variant is no evidence of a method's quality.

    python benchmarks/quantize.py --run-dir runs/qdemo [--variant NAME ...] [--max-windows 4]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from quantship.bench.provenance import provenance
from quantship.evaluate.perplexity import WindowPlan, hf_logits_fn, score_windows
from quantship.layout import BASELINE_JSON, EVAL_TENSORS, baseline_checkpoint
from quantship.rundir import RunDir, atomic_write_json, read_json

CAVEAT = (
    "demo model weights come from a Q4_1 GGUF (4-bit, block-32, asymmetric grid): Q4_1 and g32 asymmetric "
    "4-bit variants reproduce them almost exactly and are no evidence of quality"
)


def eval_plan(run: RunDir, max_windows: int | None) -> WindowPlan:
    tensors = load_file(str(run.require("baseline", "quantship baseline --model PATH") / EVAL_TENSORS))
    ids, first = tensors["input_ids"].long(), tensors["first_target"].long()
    if max_windows:
        ids, first = ids[:max_windows], first[:max_windows]
    return WindowPlan(ids, first)


def hf_perplexity(folder: Path, plan: WindowPlan, batch_size: int) -> tuple[float, float]:
    """Perplexity of a transformers-loadable checkpoint, computed in float32 like the baseline."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    result = score_windows(hf_logits_fn(model), plan, batch_size)
    return result.perplexity, result.tokens_per_s


def gguf_perplexity(path: Path, plan: WindowPlan) -> tuple[float, float]:
    """Perplexity of a GGUF file from llama-cpp-python's logits over the same windows."""
    import numpy as np
    from llama_cpp import Llama

    length = int(plan.input_ids.shape[1])
    llm = Llama(model_path=str(path), n_ctx=length, n_batch=length, logits_all=True, n_threads=2, verbose=False)

    def logits(batch: torch.Tensor) -> torch.Tensor:
        rows = []
        for row in batch.tolist():
            llm.reset()
            llm.eval(row)
            rows.append(torch.from_numpy(np.array(llm.scores[: len(row)], dtype=np.float32)))
        return torch.stack(rows)

    result = score_windows(logits, plan, batch_size=1)
    return result.perplexity, result.tokens_per_s


def measure(run: RunDir, name: str, manifest: dict, plan: WindowPlan, batch_size: int) -> dict:
    folder = run.stage_dir(f"variants/{name}")
    row = {
        "variant": name,
        "method": manifest.get("method"),
        "scheme": manifest.get("scheme"),
        "group_size": manifest.get("group_size"),
        "format": manifest.get("format"),
        "size_bytes": manifest.get("size_bytes"),
        "bits_per_weight": manifest.get("bits_per_weight"),
        "quantized_linear_bits_per_weight": (manifest.get("details") or {}).get("quantized_linear_bits_per_weight"),
        "quantize_wall_time_s": manifest.get("wall_time_s"),
        "quantize_peak_rss_bytes": manifest.get("peak_rss_bytes"),
        "perplexity": None,
        "eval_tokens_per_s": None,
        "skipped": None,
    }
    try:
        if manifest.get("format") == "gguf":
            ppl, speed = gguf_perplexity(folder / manifest["details"]["gguf_file"], plan)
        else:
            ppl, speed = hf_perplexity(folder, plan, batch_size)
        row.update(perplexity=round(ppl, 4), eval_tokens_per_s=round(speed, 1))
    except ImportError as error:
        row["skipped"] = f"cannot score {manifest.get('format')}: {error}"
    return row


def _optional(value, width: int, spec: str) -> str:
    """A number, or '-' where the format does not report it (GGUF has no linear-only figure)."""
    return f"{'-' if value is None else format(value, spec):>{width}}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, default=Path("runs/qdemo"))
    parser.add_argument("--variant", action="append", help="variant names (default: every variant of the run)")
    parser.add_argument("--max-windows", type=int, default=None, help="score only the first N stored windows")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "quantize.json")
    args = parser.parse_args()

    run = RunDir(args.run_dir)
    plan = eval_plan(run, args.max_windows)
    names = args.variant or sorted(p.name for p in (run.root / "variants").iterdir() if (p / "manifest.json").exists())
    started = time.time()
    baseline_ppl, baseline_speed = hf_perplexity(baseline_checkpoint(run), plan, args.batch_size)
    recorded = read_json(run.stage_dir("baseline") / BASELINE_JSON)["perplexity"]
    rows = []
    for name in names:
        manifest = run.manifest(f"variants/{name}")
        if manifest is None:
            raise SystemExit(f"variant {name!r} does not exist in {run.root}")
        rows.append(measure(run, name, manifest, plan, args.batch_size))
        print(f"scored {name}", flush=True)

    header = f"{'variant':<22}{'format':<20}{'size MB':>9}{'bits/w':>8}{'lin b/w':>8}{'quant s':>9}{'RSS MB':>8}{'ppl':>9}{'Δppl %':>8}"
    print(header)
    print(f"{'baseline':<22}{'safetensors bf16':<20}{'':>9}{'':>8}{'':>8}{'':>9}{'':>8}{baseline_ppl:>9.3f}{'':>8}")
    for r in rows:
        ppl = r["perplexity"]
        delta = f"{(ppl / baseline_ppl - 1) * 100:+.2f}" if ppl else "-"
        print(
            f"{r['variant']:<22}{r['format'] or '-':<20}{(r['size_bytes'] or 0) / 1e6:>9.1f}{r['bits_per_weight'] or 0:>8.3f}"
            f"{_optional(r['quantized_linear_bits_per_weight'], 8, '.3f')}{r['quantize_wall_time_s'] or 0:>9.1f}"
            f"{(r['quantize_peak_rss_bytes'] or 0) / 1e6:>8.0f}{ppl if ppl else float('nan'):>9.3f}{delta:>8}"
            + (f"  skipped: {r['skipped']}" if r["skipped"] else "")
        )
    atomic_write_json(
        args.out,
        {
            "run_dir": str(run.root),
            **provenance(torch_threads=torch.get_num_threads()),
            "eval": {
                "windows": int(plan.input_ids.shape[0]),
                "window": int(plan.input_ids.shape[1]),
                "tokens_scored": plan.scored_positions,
            },
            "baseline": {
                "checkpoint": str(baseline_checkpoint(run)),
                "perplexity": round(baseline_ppl, 4),
                "eval_tokens_per_s": round(baseline_speed, 1),
                "perplexity_in_baseline_json": recorded["value"],
            },
            "variants": rows,
            "caveat": CAVEAT,
            "seconds": round(time.time() - started, 1),
        },
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
