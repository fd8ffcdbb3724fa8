"""Task accuracy with lm-evaluation-harness on offline task files quantship builds itself.

Two multiple-choice tasks are generated deterministically (seed 0) from the built-in
evaluation corpus (CPython's pydoc topics, shipped with every Python), so no hub is
needed:
- quantship_cloze: a sentence without its last word; the true word vs 3 other
  sentence-final words of the corpus.
- quantship_next_sentence: a sentence; its true successor vs 3 sentences of other topics.
lm-eval reads them as local JSONL (`dataset_path: json`) through a task YAML. Any other
lm-eval task name is passed through (it needs its data reachable). transformers models
run through lm-eval's HFLM on the in-process model; GGUF through `ScorerLM`, a
loglikelihood-only adapter over the llama.cpp scorer.
"""

from __future__ import annotations

import json
import os
import random
import re
from pathlib import Path

import torch

from quantship.data.sources import builtin_documents
from quantship.options import BUILTIN_TASKS
from quantship.rundir import atomic_write_text, sha256_json

_YAML = """task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {path}
test_split: test
output_type: multiple_choice
doc_to_text: context
doc_to_choice: choices
doc_to_target: label
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""


def _split(document: str) -> list[str]:
    return re.split(r"(?<=[.!?])\s+", re.sub(r"\s+", " ", document))


def _plain(sentence: str) -> bool:
    """Prose only: 6-50 words ending in a full stop, without code or grammar-rule characters."""
    return 6 <= len(sentence.split()) <= 50 and re.fullmatch(r"[A-Z][^=<>{}\[\]*`|#_]+[a-z]\.", sentence) is not None


def build_task_files(folder: Path, items: int = 100) -> str:
    """Write the built-in tasks' JSONL + YAML into `folder`; returns a hash of their content."""
    rng = random.Random(0)
    per_doc = [_split(d) for d in builtin_documents("evaluation")]
    flat = [(i, s) for i, doc in enumerate(per_doc) for s in doc if _plain(s)]
    finals = sorted({s.split()[-1].rstrip(".") for _, s in flat if len(s.split()[-1]) > 4})
    cloze, nxt = [], []
    for _, sentence in rng.sample(flat, min(items, len(flat))):
        words = sentence.rstrip(".").split()
        answer = words[-1]
        choices = [answer, *rng.sample([w for w in finals if w != answer], 3)]
        rng.shuffle(choices)
        cloze.append({"context": " ".join(words[:-1]), "choices": choices, "label": choices.index(answer)})
    pairs = [(i, a, b) for i, doc in enumerate(per_doc) for a, b in zip(doc, doc[1:], strict=False) if _plain(a) and _plain(b)]
    for doc_id, sentence, successor in rng.sample(pairs, min(items, len(pairs))):
        others = [s for i, s in flat if i != doc_id]
        choices = [successor, *rng.sample(others, 3)]
        rng.shuffle(choices)
        nxt.append({"context": sentence, "choices": choices, "label": choices.index(successor)})
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in zip(BUILTIN_TASKS, (cloze, nxt), strict=True):  # (cloze, next sentence)
        data = folder / f"{name}.jsonl"
        atomic_write_text(data, "".join(json.dumps(r) + "\n" for r in rows))
        atomic_write_text(folder / f"{name}.yaml", _YAML.format(name=name, path=json.dumps(str(data.resolve()))))
    return sha256_json({"cloze": cloze, "next": nxt})


def scorer_lm(scorer, tokenizer):
    """An lm-eval LM over a quantship scorer (loglikelihood only); the class is built lazily."""
    from lm_eval.api.model import LM

    class ScorerLM(LM):
        def loglikelihood(self, requests) -> list[tuple[float, bool]]:
            out = []
            for request in requests:
                context, continuation = request.args
                ctx = tokenizer(context, add_special_tokens=False)["input_ids"]
                whole = tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
                cont = whole[len(ctx) :] or tokenizer(continuation, add_special_tokens=False)["input_ids"]
                ids = (ctx + cont) if whole[: len(ctx)] == ctx else whole
                n = len(cont)
                logprobs = torch.log_softmax(scorer.logits(torch.tensor([ids]))[0, -n - 1 : -1].float(), -1)
                targets = torch.tensor(ids[-n:])
                out.append((float(logprobs.gather(1, targets[:, None]).sum()), bool((logprobs.argmax(-1) == targets).all())))
            return out

        def loglikelihood_rolling(self, requests):
            raise NotImplementedError("quantship's offline tasks are multiple choice")

        def generate_until(self, requests):
            raise NotImplementedError("quantship's offline tasks are multiple choice")

    return ScorerLM()


def task_accuracy(lm, tasks: list[str], task_dir: Path) -> dict[str, float]:
    """acc per task, through lm-eval's own evaluator."""
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    results = simple_evaluate(model=lm, tasks=tasks, task_manager=TaskManager(include_path=str(task_dir)), log_samples=False)
    return {t: float(results["results"][t]["acc,none"]) for t in tasks}


def hf_lm(model, tokenizer, batch_size: int = 8):
    from lm_eval.models.huggingface import HFLM

    return HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device=str(next(model.parameters()).device))


def lm_for(scorer, tokenizer):
    """HFLM on the in-process transformers model; the scorer adapter for llama.cpp."""
    return hf_lm(scorer.model, tokenizer) if scorer.runtime == "transformers" else scorer_lm(scorer, tokenizer)


def prepare_tasks(cache_dir: Path, items: int) -> tuple[Path, str]:
    folder = cache_dir / "lm_eval_tasks"
    return folder, build_task_files(folder, items)


def baseline_task_accuracy(baseline, tokenizer, tasks: list[str], task_dir: Path, task_sha: str, cache_dir: Path) -> dict[str, float]:
    """The baseline checkpoint's accuracy, computed once per baseline and task set (validation/baseline-tasks.json)."""
    from quantship.models.loading import load_causal_lm
    from quantship.rundir import atomic_write_json, read_json

    key = sha256_json({"baseline": baseline.fingerprint, "tasks": tasks, "files": task_sha})
    cache = cache_dir / "baseline-tasks.json"
    try:
        cached = read_json(cache)
        if cached.get("key") == key:
            return cached["accuracy"]
    except (FileNotFoundError, ValueError):
        pass
    eval_ = baseline.summary["eval"]
    model = load_causal_lm(baseline.checkpoint, eval_["dtype"], eval_["device"])
    accuracy = task_accuracy(hf_lm(model, tokenizer), tasks, task_dir)
    atomic_write_json(cache, {"key": key, "accuracy": accuracy})
    return accuracy
