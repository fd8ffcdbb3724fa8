"""The gateway's background loops survive a failing step, never a cancel.

Every loop (checks, store flush, probes, webhooks, the judge) catches a step's errors and
tries again at the next interval. Some clients turn a task's cancel into an error of their
own (redis-py's asyncio client did, when a gateway on Redis shut down mid-check): caught as
a failure, the loop went on, and the gateway never finished shutting down. A cancel can
also vanish inside a step without any error (seen under load with the loops on Redis:
the check task was left `cancelling` in its sleep, for good), so every loop also asks at
each interval whether it was cancelled (`pause`).
"""

from __future__ import annotations

import asyncio


def stop_if_cancelled() -> None:
    """Call in a loop's `except`: re-raise the cancel that a library turned into its own error."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def pause(seconds: float) -> None:
    """A loop's wait between steps: sleep, then stop if a cancel arrived during the last step and was swallowed."""
    stop_if_cancelled()
    await asyncio.sleep(seconds)
