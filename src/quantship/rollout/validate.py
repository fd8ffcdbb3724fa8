"""The OpenAI request fields the gateway forwards, checked before any backend sees them.

A backend that answers a client's bad input with a 5xx (or crashes re-encoding it)
would otherwise charge the client's mistake to whichever variant served it: the
breaker opens, the error rate rises, the rollout rolls back. The rules are plain
data so that `/openapi.json` is built from the same table the gateway enforces.
Unknown fields are forwarded untouched (vLLM and llama.cpp add their own); like
every field they must be finite numbers and valid unicode, nested at most
`MAX_DEPTH` deep.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

MAX_DEPTH = 32
INT32 = 2**31 - 1  # vLLM and llama.cpp keep token counts and ids in 32-bit integers
INT64 = 2**63 - 1


class RequestError(ValueError):
    """A client's request the gateway refuses (HTTP 400); `param` names the field."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


class Rule:
    def check(self, value: Any, param: str) -> None:
        raise NotImplementedError

    def schema(self) -> dict[str, Any]:
        raise NotImplementedError


@dataclass(frozen=True)
class Number(Rule):
    lo: float
    hi: float
    integer: bool = False

    def accepts(self, value: Any) -> bool:
        kind = int if self.integer else (int, float)
        return type(value) is not bool and isinstance(value, kind) and self.lo <= value <= self.hi

    def check(self, value: Any, param: str) -> None:
        if not self.accepts(value):
            what = "an integer" if self.integer else "a number"
            raise RequestError(f"'{param}' must be {what} from {self.lo} to {self.hi}", param)

    def schema(self) -> dict[str, Any]:
        return {"type": "integer" if self.integer else "number", "minimum": self.lo, "maximum": self.hi}


def Integer(lo: int, hi: int) -> Number:  # noqa: N802 - reads as a type in the tables below
    return Number(lo, hi, integer=True)


@dataclass(frozen=True)
class Boolean(Rule):
    def check(self, value: Any, param: str) -> None:
        if type(value) is not bool:
            raise RequestError(f"'{param}' must be true or false", param)

    def schema(self) -> dict[str, Any]:
        return {"type": "boolean"}


@dataclass(frozen=True)
class String(Rule):
    def check(self, value: Any, param: str) -> None:
        if type(value) is not str:
            raise RequestError(f"'{param}' must be a string", param)

    def schema(self) -> dict[str, Any]:
        return {"type": "string"}


@dataclass(frozen=True)
class ListOf(Rule):
    item: Rule
    min_items: int = 0
    max_items: int | None = None

    def check(self, value: Any, param: str) -> None:
        if type(value) is not list or len(value) < self.min_items or (self.max_items is not None and len(value) > self.max_items):
            size = f"{self.min_items} to {self.max_items}" if self.max_items is not None else f"at least {self.min_items}"
            raise RequestError(f"'{param}' must be a list of {size} items", param)
        if isinstance(self.item, Number) and value and self._all_numbers(value):
            return
        for i, item in enumerate(value):
            self.item.check(item, f"{param}[{i}]")

    def _all_numbers(self, value: list[Any]) -> bool:
        """Token id lists run to 100k items: checked in C-speed passes, item by item only to name a bad one."""
        kinds = {int} if self.item.integer else {int, float}
        return set(map(type, value)) <= kinds and self.item.lo <= min(value) and max(value) <= self.item.hi

    def schema(self) -> dict[str, Any]:
        schema = {"type": "array", "items": self.item.schema(), "minItems": self.min_items}
        return schema if self.max_items is None else {**schema, "maxItems": self.max_items}


@dataclass(frozen=True)
class MapOf(Rule):
    """An object with arbitrary keys, such as logit_bias (token id -> bias)."""

    value: Rule

    def check(self, value: Any, param: str) -> None:
        if type(value) is not dict:
            raise RequestError(f"'{param}' must be an object", param)
        for key, item in value.items():
            self.value.check(item, f"{param}.{key}")

    def schema(self) -> dict[str, Any]:
        return {"type": "object", "additionalProperties": self.value.schema()}


@dataclass(frozen=True)
class Object(Rule):
    """Known fields checked, null meaning absent for optional ones; other fields pass through."""

    fields: dict[str, Rule]
    required: tuple[str, ...] = ()

    def check(self, value: Any, param: str) -> None:
        if type(value) is not dict:
            raise RequestError(f"'{param}' must be an object", param)
        self.check_fields(value, f"{param}.")

    def check_fields(self, value: dict[str, Any], prefix: str = "") -> None:
        for name in self.required:
            if value.get(name) is None:
                raise RequestError(f"'{prefix}{name}' is required", f"{prefix}{name}")
        for name, rule in self.fields.items():
            item = value.get(name)
            if item is not None:
                rule.check(item, f"{prefix}{name}")

    def schema(self) -> dict[str, Any]:
        properties = {n: _nullable(r.schema()) if n not in self.required else r.schema() for n, r in self.fields.items()}
        return {"type": "object", "properties": properties, "required": list(self.required)}


@dataclass(frozen=True)
class OneOf(Rule):
    rules: tuple[Rule, ...]
    description: str

    def check(self, value: Any, param: str) -> None:
        for rule in self.rules:
            try:
                rule.check(value, param)
                return
            except RequestError:
                continue
        raise RequestError(f"'{param}' must be {self.description}", param)

    def schema(self) -> dict[str, Any]:
        return {"anyOf": [r.schema() for r in self.rules], "description": self.description}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


TOKEN = Integer(0, INT32)
_CONTENT_PART = Object({"type": String(), "text": String()}, required=("type",))
_TOOL_CALL = Object({"id": String(), "type": String(), "function": Object({"name": String(), "arguments": String()})})
_MESSAGE = Object(
    {
        "role": String(),
        "content": OneOf((String(), ListOf(_CONTENT_PART)), "a string or a list of content parts"),
        "name": String(),
        "tool_call_id": String(),
        "tool_calls": ListOf(_TOOL_CALL),
    },
    required=("role",),
)
_TOOL = Object({"type": String(), "function": Object({"name": String(), "description": String()}, required=("name",))},
               required=("type",))

_SAMPLING: dict[str, Rule] = {
    "model": String(),
    "user": String(),
    "stream": Boolean(),
    "stream_options": Object({"include_usage": Boolean(), "continuous_usage_stats": Boolean()}),
    "max_tokens": Integer(1, INT32),
    "n": Integer(1, 128),
    "temperature": Number(0, 2),
    "top_p": Number(0, 1),
    "top_k": Integer(-1, INT32),
    "min_p": Number(0, 1),
    "frequency_penalty": Number(-2, 2),
    "presence_penalty": Number(-2, 2),
    "seed": Integer(-INT64 - 1, INT64),
    "stop": OneOf((String(), ListOf(String(), max_items=16)), "a string or a list of up to 16 strings"),
    "logit_bias": MapOf(Number(-100, 100)),
}

CHAT = Object(
    {
        **_SAMPLING,
        "messages": ListOf(_MESSAGE, min_items=1),
        "max_completion_tokens": Integer(1, INT32),
        "logprobs": Boolean(),
        "top_logprobs": Integer(0, 20),
        "response_format": Object({"type": String()}, required=("type",)),
        "tools": ListOf(_TOOL),
        "tool_choice": OneOf((String(), Object({"type": String()}, required=("type",))), "a string or an object"),
        "parallel_tool_calls": Boolean(),
    },
    required=("messages",),
)
COMPLETIONS = Object(
    {
        **_SAMPLING,
        "prompt": OneOf(
            (String(), ListOf(String(), min_items=1), ListOf(TOKEN, min_items=1), ListOf(ListOf(TOKEN, min_items=1), min_items=1)),
            "a string, a list of strings, a list of token ids or a list of token id lists",
        ),
        "logprobs": Integer(0, 20),
        "echo": Boolean(),
        "suffix": String(),
        "best_of": Integer(1, 128),
    },
    required=("prompt",),
)
REQUESTS = {"chat": CHAT, "completions": COMPLETIONS}


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"{text[:40]} is too large for a float")
    return value


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")  # only \uD800-\uDFFF escapes can leave a lone surrogate


def parse(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object that re-encodes exactly: UTF-8, finite numbers, no lone surrogate, bounded depth."""
    try:
        text = raw.decode("utf-8")
        body = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except RecursionError as error:
        raise RequestError(f"request body is nested deeper than {MAX_DEPTH} levels") from error
    except ValueError as error:  # UnicodeDecodeError and JSONDecodeError included
        raise RequestError(f"request body is not valid UTF-8 JSON ({error})") from error
    if type(body) is not dict:
        raise RequestError("request body must be a JSON object")
    if _SURROGATE_ESCAPE.search(text):  # usually a valid pair (an escaped emoji): encode to find out
        try:
            json.dumps(body, ensure_ascii=False).encode()
        except UnicodeEncodeError as error:
            raise RequestError("request body contains half a surrogate pair, which is not valid unicode") from error
    _check_depth(body)
    return body


_CONTAINERS = {dict, list}


def _check_depth(body: dict[str, Any]) -> None:
    stack: list[tuple[Any, int]] = [(body, 1)]
    while stack:
        value, depth = stack.pop()
        children = value.values() if type(value) is dict else value
        if not _CONTAINERS & set(map(type, children)):
            continue
        nested = [(c, depth + 1) for c in children if type(c) is dict or type(c) is list]
        if depth >= MAX_DEPTH:
            raise RequestError(f"request body is nested deeper than {MAX_DEPTH} levels")
        stack.extend(nested)


def check_request(body: dict[str, Any], endpoint: str, max_tokens: int | None = None) -> None:
    """Raise RequestError naming the first field whose type or range the OpenAI API refuses.

    `max_tokens` is the backends' own limit when the config knows it (e.g. vLLM's max_model_len).
    """
    REQUESTS[endpoint].check_fields(body)
    if max_tokens is not None:
        for name in ("max_tokens", "max_completion_tokens"):
            if (body.get(name) or 0) > max_tokens:
                raise RequestError(f"'{name}' must be at most {max_tokens}, the backends' limit", name)


def request_schema(endpoint: str) -> dict[str, Any]:
    return REQUESTS[endpoint].schema()

