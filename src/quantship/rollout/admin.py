"""Client of the gateway's admin API, for the CLI and for scripts."""

from __future__ import annotations

import os
from typing import Any

import httpx

from quantship.errors import InputError

TOKEN_ENV = "QUANTSHIP_ROLLOUT_TOKEN"


def call(url: str, action: str, token: str | None, reason: str = "", timeout_s: float = 10) -> dict[str, Any]:
    """GET /admin/status or POST /admin/<action>; every failure becomes one InputError line."""
    token = token or os.environ.get(TOKEN_ENV)
    if not token:
        raise InputError("no admin token given", f"pass --token or set {TOKEN_ENV}")
    headers = {"authorization": f"Bearer {token}"}
    endpoint = f"{url.rstrip('/')}/admin/{action}"
    try:
        if action in ("status", "audit"):
            response = httpx.get(endpoint, headers=headers, timeout=timeout_s)
        else:
            response = httpx.post(endpoint, headers=headers, json={"reason": reason}, timeout=timeout_s)
    except httpx.HTTPError as error:
        raise InputError(
            f"cannot reach the rollout gateway at {url} ({error})",
            "check --url and that `quantship rollout serve` runs",
        ) from error
    if response.status_code >= 400:
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = response.text[:200]
        raise InputError(f"gateway refused `{action}` (HTTP {response.status_code}): {message}", "see `quantship rollout status`")
    return response.json()
