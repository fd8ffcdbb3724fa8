"""Built-in prompts: reference generations and known-answer probes.

Reference prompts are regenerated greedily by every variant and compared token by
token with the baseline. Probes carry an expected substring: a cheap, reliable sign
that a model still knows what it knew (the rollout monitor uses the same idea).
A prompt is raw text (completion) or chat messages (rendered with the chat template).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Prompt(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    text: str | None = None  # raw completion prompt
    messages: list[dict[str, str]] | None = None  # chat prompt
    expect: str | None = None  # probes: substring the greedy answer must contain


REFERENCE_PROMPTS = [
    Prompt(id="france", text="The capital of France is Paris. The capital of Germany is"),
    Prompt(id="python-list", text="In Python, a list comprehension is"),
    Prompt(id="photosynthesis", text="Photosynthesis is the process by which"),
    Prompt(id="def-fib", text="def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n"),
    Prompt(id="story", text="Once upon a time, in a small village by the sea,"),
    Prompt(id="http", text="The HTTP status code 404 means"),
    Prompt(id="chat-gravity", messages=[{"role": "user", "content": "Explain gravity in one sentence."}]),
    Prompt(id="chat-haiku", messages=[{"role": "user", "content": "Write a haiku about autumn."}]),
    Prompt(id="chat-sql", messages=[{"role": "user", "content": "How do I select all rows from a table named users in SQL?"}]),
    Prompt(id="chat-advice", messages=[{"role": "user", "content": "Give me three tips for writing clean code."}]),
    Prompt(id="chat-math", messages=[{"role": "user", "content": "What is 12 times 12?"}]),
    Prompt(id="chat-translate", messages=[{"role": "user", "content": "Translate 'good morning' into French."}]),
]

KNOWN_ANSWER_PROBES = [
    Prompt(id="capital-france", text="The capital of France is", expect="Paris"),
    Prompt(id="capital-germany", text="The capital of France is Paris. The capital of Germany is", expect="Berlin"),
    Prompt(id="capital-italy", text="The capital of Spain is Madrid. The capital of Italy is", expect="Rome"),
    Prompt(id="capital-japan", text="The capital of Japan is", expect="Tokyo"),
    Prompt(id="days", text="Monday, Tuesday, Wednesday, Thursday,", expect="Friday"),
    Prompt(id="months", text="January, February, March, April,", expect="May"),
    Prompt(id="counting", text="1, 2, 3, 4, 5, 6,", expect="7"),
    Prompt(id="alphabet", text="A, B, C, D, E, F,", expect="G"),
    Prompt(id="chat-capital", messages=[{"role": "user", "content": "What is the capital of France?"}], expect="Paris"),
    Prompt(id="chat-water", messages=[{"role": "user", "content": "What is the chemical formula of water?"}], expect="H"),
]
