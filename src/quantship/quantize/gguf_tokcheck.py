"""Check that llama.cpp tokenizes a converted GGUF exactly like the checkpoint's tokenizer.

llama.cpp's converter picks the vocabulary type (SentencePiece-style "llama",
byte-level "gpt2", ...) from heuristics over tokenizer.json. A non-standard file can
send a byte-level BPE tokenizer down the SentencePiece path: the GGUF then loads but
tokenizes differently, or aborts in llama.cpp on the first non-ASCII byte. Tensor
checks cannot see that, so a few strings are tokenized by both and compared. The
llama.cpp side runs in a subprocess, because llama.cpp aborts the whole process on
such a vocabulary.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from quantship.errors import QuantshipError

SAMPLES = (
    "The capital of France is Paris.",
    "  two leading spaces,\ttabs and\nnew lines\n\n",
    "Ünïcödé: naïve café, 日本語, Ελληνικά, emoji 🙂",
    "def square(x):\n    return x ** 2  # 1234567890",
)

_LLAMA_CPP_TOKENIZE = """
import json, sys
from llama_cpp import Llama
model = Llama(model_path=sys.argv[1], vocab_only=True, verbose=False)
texts = json.loads(sys.argv[2])
print(json.dumps([model.tokenize(t.encode("utf-8"), add_bos=False, special=False) for t in texts]))
"""


class TokenizerMismatch(QuantshipError):
    """The GGUF's vocabulary does not reproduce the checkpoint's tokenization (exit 2)."""


def check_tokenizer(gguf_path: Path, checkpoint: Path, vocab: dict[str, Any]) -> dict[str, Any]:
    """Compare tokenizations of SAMPLES; raise TokenizerMismatch on any difference."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    expected = [tokenizer.encode(text, add_special_tokens=False) for text in SAMPLES]
    done = subprocess.run(
        [sys.executable, "-c", _LLAMA_CPP_TOKENIZE, str(gguf_path), json.dumps(SAMPLES)],
        capture_output=True, text=True, timeout=300, check=False,
    )
    described = f"vocabulary type {vocab.get('model')!r}, pre-tokenizer {vocab.get('pre')!r}"
    fix = (
        "the checkpoint's tokenizer.json misleads llama.cpp's converter; make it a standard one "
        "(a byte-level BPE tokenizer has model.byte_fallback false and a ByteLevel decoder)"
    )
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise TokenizerMismatch(f"llama.cpp cannot tokenize the converted GGUF ({described}): {last[:160]}", fix)
    got = json.loads(done.stdout.strip().splitlines()[-1])
    for text, want, have in zip(SAMPLES, expected, got, strict=True):
        if want != have:
            raise TokenizerMismatch(
                f"llama.cpp tokenizes {text!r} differently from the checkpoint's tokenizer ({described}): "
                f"{have[:8]}... vs {want[:8]}...",
                fix,
            )
    return {"samples": len(SAMPLES), "tokens": sum(map(len, expected)), "matches": True, **vocab}
