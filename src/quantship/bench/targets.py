"""Turns `--url`/`--model` into a checked endpoint before any load is sent.

A typo in a URL or a model name would otherwise show up as a run of 100%
errors; here it is one line that names the fix.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx

from quantship.bench.models import Api, Target
from quantship.errors import InputError


def normalise_url(url: str) -> str:
    """`http://host:port`, `.../v1` or `.../v1/` all become `http://host:port/v1`."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InputError(f"{url!r} is not an http(s) URL", "pass the server root, e.g. --url http://127.0.0.1:8000")
    path = parts.path.rstrip("/")
    if not path.endswith("/v1"):
        path += "/v1"
    return f"{parts.scheme}://{parts.netloc}{path}"


def served_models(base_url: str, timeout_s: float = 10.0) -> list[str]:
    """Model ids from /v1/models; an unreachable server is an InputError."""
    try:
        response = httpx.get(base_url + "/models", timeout=timeout_s)
    except httpx.HTTPError as error:
        raise InputError(
            f"cannot reach {base_url} ({type(error).__name__})",
            "start the server first (`quantship serve ...`) or fix --url",
        ) from None
    if response.status_code != 200:
        raise InputError(
            f"{base_url}/models answered HTTP {response.status_code}",
            "point --url at an OpenAI-compatible server (vLLM, llama.cpp's llama-server)",
        )
    try:
        return [str(item["id"]) for item in response.json().get("data", [])]
    except (ValueError, KeyError, TypeError, AttributeError):
        raise InputError(f"{base_url}/models is not an OpenAI model list", "check --url") from None


def resolve_target(url: str, model: str | None, api: Api, label: str | None, metrics_url: str | None = None) -> Target:
    """The endpoint with its model name checked against what the server serves."""
    base_url = normalise_url(url)
    models = served_models(base_url)
    if model is None:
        if not models:
            raise InputError(f"{base_url} lists no models", "pass --model NAME")
        model = models[0]
    elif models and model not in models:
        raise InputError(
            f"{base_url} does not serve a model named {model!r} (it serves {', '.join(models)})",
            "pass one of those to --model / --compare-model, or leave it out to use the first",
        )
    if metrics_url is not None and urlsplit(metrics_url).scheme not in ("http", "https"):
        raise InputError(
            f"{metrics_url!r} is not an http(s) URL", "pass e.g. --metrics-url http://127.0.0.1:8000/metrics"
        )
    return Target(label=label or model, base_url=base_url, model=model, api=api, metrics_url=metrics_url)


def distinct_labels(baseline: Target, compare: Target) -> tuple[Target, Target]:
    """Two endpoints under the same label (same model name) get their role appended."""
    if baseline.label != compare.label:
        return baseline, compare
    return (
        baseline.model_copy(update={"label": f"{baseline.label} [baseline]"}),
        compare.model_copy(update={"label": f"{compare.label} [compare]"}),
    )
