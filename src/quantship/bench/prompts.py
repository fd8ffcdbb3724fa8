"""Prompts to send: a built-in set of everyday requests, or the user's JSONL file.

A JSONL line is `{"prompt": "..."}` or `{"messages": [{"role": ..., "content": ...}]}`;
real traffic samples in either shape can be replayed as they are.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quantship.errors import InputError

BUILTIN = "builtin"

# Short, varied instructions of the kind a chat deployment answers all day.
_BUILTIN_PROMPTS = (
    "Explain in a few sentences why the sky looks blue during the day.",
    "Write a short email asking a colleague to move our meeting to Thursday.",
    "List three practical tips for keeping houseplants alive in winter.",
    "Summarise the plot of a detective story in which the butler is innocent.",
    "What is the difference between a list and a tuple in Python?",
    "Describe how a bicycle gear system helps a rider climb hills.",
    "Give me a simple recipe for tomato soup.",
    "Why do we have leap years? Answer briefly.",
    "Write a haiku about a train leaving the station at dawn.",
    "Explain what a hash table is to someone who has never programmed.",
    "Suggest a name for a small bakery that specialises in rye bread, and explain it.",
    "How does compound interest work? Use an example with round numbers.",
    "Translate 'Where is the nearest library?' into French and Spanish.",
    "What should I pack for a three-day hiking trip in the mountains?",
    "Describe the water cycle in four steps.",
    "Write a polite reply declining an invitation to a weekend conference.",
    "What are the main causes of inflation? Keep it short.",
    "Explain the rules of tic-tac-toe.",
    "Give two arguments for and two against working from home.",
    "How do vaccines train the immune system?",
    "Write the opening paragraph of a story set on a lighthouse.",
    "What is the capital of Australia, and why is it not Sydney?",
    "Explain recursion with a short example in any programming language.",
    "How can I make my morning routine more efficient?",
    "Describe the taste of a ripe mango to someone who has never had one.",
    "What does a database index do, and when can it slow things down?",
    "Give a short history of the printing press.",
    "Write a limerick about a cat who learns to code.",
    "How do noise-cancelling headphones work?",
    "Compare trains and planes for a 500 km journey.",
    "What are good habits for writing clear commit messages?",
    "Explain why ice floats on water.",
)


@dataclass(frozen=True)
class Prompt:
    """One prompt, usable against both the chat and the completions API."""

    prompt: str | None = None
    chat: list[dict[str, Any]] | None = None

    def messages(self) -> list[dict[str, Any]]:
        return self.chat if self.chat is not None else [{"role": "user", "content": self.prompt or ""}]

    def text(self) -> str:
        """Plain text for /v1/completions (message contents joined when given as chat)."""
        if self.prompt is not None:
            return self.prompt
        return "\n".join(str(m.get("content", "")) for m in self.chat or [])


def builtin_prompts() -> list[Prompt]:
    return [Prompt(prompt=text) for text in _BUILTIN_PROMPTS]


def load_prompts(source: str) -> list[Prompt]:
    """`builtin` or a JSONL path; a bad file is an InputError naming the line."""
    if source == BUILTIN:
        return builtin_prompts()
    path = Path(source)
    if not path.is_file():
        raise InputError(f"prompt file {path} does not exist", "pass a JSONL file or `--prompts builtin`")
    prompts = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        prompts.append(_parse_line(path, number, line))
    if not prompts:
        raise InputError(f"prompt file {path} has no prompts", 'write one JSON object a line, e.g. {"prompt": "Hi"}')
    return prompts


def _parse_line(path: Path, number: int, line: str) -> Prompt:
    fix = 'each line must be {"prompt": "..."} or {"messages": [{"role": "user", "content": "..."}]}'
    try:
        item = json.loads(line)
    except json.JSONDecodeError as error:
        raise InputError(f"{path}:{number} is not JSON ({error.msg})", fix) from None
    if isinstance(item, dict) and isinstance(item.get("prompt"), str):
        return Prompt(prompt=item["prompt"])
    messages = item.get("messages") if isinstance(item, dict) else None
    if isinstance(messages, list) and messages and all(isinstance(m, dict) and "content" in m for m in messages):
        return Prompt(chat=messages)
    raise InputError(f"{path}:{number} has neither a prompt string nor a messages list", fix)
