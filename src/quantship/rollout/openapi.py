"""The OpenAPI 3.1 description of the gateway's public endpoints, served at `/openapi.json`.

Request schemas come from the rule tables the gateway enforces (validate.py), so the
description cannot drift from what a request must satisfy; clients and fuzzers
(schemathesis, for one) can read it. The admin API is described in docs/rollout.md.
"""

from __future__ import annotations

from typing import Any

from quantship.rollout.config import RolloutConfig
from quantship.rollout.validate import request_schema

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "integer", "null"]},
            },
        }
    },
}
_ERRORS = {
    "400": "invalid request: a field's type or range, JSON that does not re-encode (NaN, lone surrogates), nesting",
    "404": "unknown model",
    "413": "body larger than max_request_bytes",
    "500": "gateway error (the connection stays open)",
    "502": "the control backend failed",
}


def _error_responses() -> dict[str, Any]:
    schema = {"$ref": "#/components/schemas/Error"}
    return {code: {"description": text, "content": {"application/json": {"schema": schema}}} for code, text in _ERRORS.items()}


def _completion(endpoint: str, summary: str) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "requestBody": {"required": True, "content": {"application/json": {"schema": request_schema(endpoint)}}},
            "responses": {
                "200": {
                    "description": "the serving backend's answer, as it wrote it (JSON, or SSE when stream is true)",
                    "headers": {"x-quantship-variant": {"schema": {"type": "string", "enum": ["control", "treatment"]}}},
                    "content": {"application/json": {"schema": {"type": "object"}}, "text/event-stream": {"schema": {"type": "string"}}},
                },
                **_error_responses(),
            },
        }
    }


def _get(summary: str, media: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"get": {"summary": summary, "responses": {"200": {"description": summary, "content": {media: {"schema": schema}}}}}}


def _analysis() -> dict[str, Any]:
    """The rollout controllers' hook (rollout/analysis.py): GET for Argo's web metric, POST for Flagger."""
    gate = {"name": "gate", "in": "query", "required": False, "schema": {"enum": ["pass", "not-fail"]}}
    verdict = {"type": "object", "required": ["verdict", "samples"],
               "properties": {"verdict": {"enum": ["pass", "fail", "inconclusive"]}, "samples": {"type": "object"}}}
    operation = {
        "summary": "Is the treatment as good as the control right now?",
        "parameters": [gate],
        "responses": {
            "200": {"description": "The verdict and the numbers behind it", "content": {"application/json": {"schema": verdict}}},
            "412": {"description": "With ?gate=: the verdict does not hold", "content": {"application/json": {"schema": verdict}}},
            **_error_responses(),
        },
    }
    return {"get": operation, "post": operation}


def openapi(config: RolloutConfig) -> dict[str, Any]:
    chat = _completion("chat", "Chat completion, routed to the user's variant")
    completions = _completion("completions", "Text completion, routed to the user's variant")
    if config.models:  # the client-facing names are part of the contract
        for operation in (chat, completions):
            operation["post"]["requestBody"]["content"]["application/json"]["schema"]["properties"]["model"] = {"enum": config.models}
    return {
        "openapi": "3.1.0",
        "info": {"title": f"quantship rollout gateway ({config.experiment})", "version": "1"},
        "paths": {
            "/v1/chat/completions": chat,
            "/v1/completions": completions,
            "/v1/models": _get("Client-facing model names", "application/json", {"type": "object"}),
            "/health": _get("Liveness and rollout status", "application/json", {"type": "object"}),
            "/metrics": _get("Prometheus metrics", "text/plain", {"type": "string"}),
            "/openapi.json": _get("This description", "application/json", {"type": "object"}),
            "/rollout/analysis": _analysis(),
        },
        "components": {"schemas": {"Error": _ERROR}},
    }
