"""The analysis hook: "is the treatment as good as the control right now?", for a rollout controller.

Argo Rollouts (web metric) and Flagger (webhooks) poll `GET /rollout/analysis` on any
gateway replica. The answer is the monitor's own check (`monitor.check`) over the shared
window of the store, so a controller and the gateway judge with the same rule: `pass`,
`fail` (a breach, or a rollout the gateway already rolled back), or `inconclusive`
(too few samples on either side: never a pass).

No admin token: the endpoint changes nothing and shows only aggregates that `/metrics`
already exports, and Flagger's webhooks cannot send an Authorization header.

`?gate=pass` (200 only on pass) and `?gate=not-fail` (200 unless fail) answer 412
otherwise, for Flagger, which reads the HTTP status instead of the body.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from quantship.rollout.errors import ApiError
from quantship.rollout.monitor import BREACH, PASS
from quantship.rollout.state import ROLLED_BACK

if TYPE_CHECKING:
    from quantship.rollout.gateway import Gateway

PASSED, FAILED, INCONCLUSIVE = "pass", "fail", "inconclusive"
GATES = {"pass": {PASSED}, "not-fail": {PASSED, INCONCLUSIVE}}


async def analyse(gateway: Gateway, now: float | None = None) -> dict[str, Any]:
    """The verdict with the numbers behind it: per-signal window values and sample counts."""
    cfg, controller = gateway.config, gateway.controller
    now = time.time() if now is None else now
    await controller.refresh()
    result = await controller.evaluate(now)
    state = controller.state
    if state.status == ROLLED_BACK:
        verdict, reasons = FAILED, ["the gateway rolled the treatment back", *state.reasons]
    else:
        verdict = {PASS: PASSED, BREACH: FAILED}.get(result.status, INCONCLUSIVE)
        reasons = result.reasons
    return {
        "verdict": verdict,
        "reasons": reasons,
        "breached": result.signals,
        "samples": {"control": result.control.samples, "treatment": result.treatment.samples},
        "min_samples": cfg.window_min_samples,
        # the gateway's own promotion rule: treatment responses since the stage began
        "stage_samples": await controller.stage_samples(),
        "min_stage_samples": cfg.min_samples,
        "window_seconds": cfg.window_seconds,
        "signals": {"control": asdict(result.control), "treatment": asdict(result.treatment)},
        "live_kl": asdict(result.live_kl),
        "experiment": cfg.experiment,
        "stage": state.stage,
        "stage_name": cfg.stages[state.stage].name,
        "status": state.status,
        "treatment_fraction": controller.fraction(),
        "consecutive_breaches": state.consecutive_breaches,
    }


def handler(gateway: Gateway):
    """The Starlette endpoint bound to one gateway (GET for Argo, POST for Flagger's webhooks)."""

    async def endpoint(request: Request) -> JSONResponse:
        gate = request.query_params.get("gate")
        if gate is not None and gate not in GATES:
            raise ApiError(400, f"gate must be one of {', '.join(GATES)}, not {gate!r}", param="gate")
        answer = await analyse(gateway)
        held = gate is None or answer["verdict"] in GATES[gate]
        return JSONResponse(answer, status_code=200 if held else 412)

    return endpoint
