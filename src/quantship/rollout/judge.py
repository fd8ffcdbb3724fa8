"""The control model as the judge: how likely does it find a sampled share of answers?

The heuristics of quality.py miss what quantization usually breaks: fluent, plausible,
wrong text. The control (full-precision) model can tell. For a sampled treatment answer the
gateway also asks the treatment for its own token log-probabilities (rollout/logprobs.py,
hidden from the client again); the mean of log q - log p over the answer's tokens is the
paired estimate of KL(treatment || control): zero for identical models, whatever the
prompts. A treatment that sends no log-probabilities falls back to the control's mean
negative log-likelihood of treatment answers minus that of its own answers in the same
window, E_q[-log p] - E_p[-log p] = KL(q || p) + H(q) - H(p), noisier because it compares
different answers. monitor.check judges either against `thresholds.max_live_kl`.

Scoring runs off the request path: the request only draws a random number and, for a
sampled answer, puts it on a bounded queue (full: dropped and counted). One worker scores
the queue in order, so the judge adds at most one request at a time to the control. A slow
or failing control delays and fails only the score.

Scoring uses vLLM's own endpoints: `/tokenize` renders the chat template (prompt alone, and
prompt plus the answer as an open final assistant message), and `/v1/completions` with the
token ids and `prompt_logprobs: 0` returns the log-probability of every token. A control
without them (llama-server, most hosted APIs) disables the live KL with one warning at
start and `quantship_rollout_live_kl_enabled 0`; the check then says "disabled".
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass
from typing import Any

from quantship.rollout import logprobs
from quantship.rollout.assign import TREATMENT
from quantship.rollout.background import pause, stop_if_cancelled
from quantship.rollout.buffered import BufferedStore
from quantship.rollout.config import LiveKL
from quantship.rollout.metrics import Metrics
from quantship.rollout.quality import Observation
from quantship.rollout.sse import CompletionReader
from quantship.rollout.upstream import BackendClient, Unreachable

log = logging.getLogger("quantship.rollout")
PENDING, ENABLED, DISABLED = "pending", "enabled", "disabled"
_PROBE_TEXT = "The capital of France is Paris."
_PROBE_SERVER_ERRORS = 5  # 5xx answers to the start probe before giving up (a server that 500s on /tokenize)


class CannotScore(Exception):
    """The control answered, but not with what scoring needs (so retrying will not help)."""


class ControlFailed(Exception):
    """The control answered a scoring call with a server error (5xx)."""


@dataclass(frozen=True)
class Sample:
    variant: str
    endpoint: str  # chat | completions
    prompt: Any  # `messages` (chat) or `prompt` (completions) of the client's request
    tools: Any
    answer: str
    ts: float
    own_logprob: float | None = None  # the answering model's summed log-probability of the answer (paired)


class Judge:
    def __init__(self, config: LiveKL, model: str, treatment_model: str, metrics: Metrics, store: BufferedStore | None,
                 retry_s: float):
        self.config = config
        self.model = model
        self.treatment_model = treatment_model
        self.paired = False  # the treatment sends its own token log-probabilities (probed at start)
        self.metrics = metrics
        self.store = store
        self.retry_s = retry_s
        self.state = PENDING
        self.queue: asyncio.Queue[Sample] = asyncio.Queue(maxsize=config.queue_size)
        self.client: BackendClient | None = None
        metrics.live_kl_enabled.set(0)
        metrics.live_kl_paired.set(0)

    def min_samples(self) -> int | None:
        """What monitor.check needs: None while the live KL cannot be computed."""
        return self.config.min_samples if self.state == ENABLED else None

    # -- request path: constant time, never raises -------------------------------------
    def draw(self, variant: str, endpoint: str, body: dict[str, Any]) -> bool:
        """The sampling draw, before the request is sent: paired, only treatment answers need the judge."""
        if self.state != ENABLED or (self.paired and variant != TREATMENT):
            return False
        prompt = body.get("messages") if endpoint == "chat" else body.get("prompt")
        if (body.get("n") or 1) != 1 or not (endpoint == "chat" or isinstance(prompt, str)):
            return False  # several choices, or a pre-tokenised / batched prompt: nothing one score can say
        return random.random() < self.config.sample_rate

    def offer(self, variant: str, endpoint: str, body: dict[str, Any], reader: CompletionReader) -> None:
        """For a sampled answer (see draw): its text, own log-probability if sent, and a queue put."""
        answer = reader.text
        if not answer or (self.paired and variant != TREATMENT):  # paired: a failover's control answer says nothing
            return
        prompt = body.get("messages") if endpoint == "chat" else body.get("prompt")
        own = reader.own_logprob if reader.own_logprob_tokens and variant == TREATMENT else None
        try:
            self.queue.put_nowait(Sample(variant, endpoint, prompt, body.get("tools"), answer, time.time(), own))
        except asyncio.QueueFull:
            self.metrics.live_kl_samples.labels(variant, "dropped").inc()

    # -- background -------------------------------------------------------------------
    async def run(self, client: BackendClient, treatment: BackendClient) -> None:
        """Find out once whether the control can score (and the treatment pair), then score the queue for good."""
        self.client = client
        server_errors = 0
        while self.state == PENDING:
            try:
                await self._probe()
                self.paired = await self._treatment_sends_logprobs(treatment)
                self.metrics.live_kl_paired.set(int(self.paired))
                self.state = ENABLED
                self.metrics.live_kl_enabled.set(1)
            except (CannotScore, ControlFailed, ValueError) as error:
                stop_if_cancelled()
                server_errors += not isinstance(error, CannotScore)
                if isinstance(error, CannotScore) or server_errors >= _PROBE_SERVER_ERRORS:
                    self.state = DISABLED
                    log.warning("live KL disabled: the control cannot score answers (%s)", error)
                    return
                await pause(self.retry_s)
            except Unreachable:  # not up yet: ask again, without a warning per try
                stop_if_cancelled()
                await pause(self.retry_s)
        while True:
            stop_if_cancelled()
            sample = await self.queue.get()
            try:
                nll, tokens = await self.score(sample)
            except (Unreachable, ControlFailed, CannotScore, ValueError, KeyError, TypeError) as error:
                stop_if_cancelled()
                self.metrics.live_kl_samples.labels(sample.variant, "failed").inc()
                log.debug("live KL: scoring one answer failed: %s", error)
                continue
            if tokens:
                own = None if sample.own_logprob is None else -sample.own_logprob
                self.store.record({}, Observation(sample.variant, sample.ts, ok=True, scored_tokens=tokens,
                                                        scored_nll=nll, scored_own_nll=own))
                self.metrics.live_kl_samples.labels(sample.variant, "scored").inc()

    async def _probe(self) -> None:
        ids = await self._tokenize({"prompt": _PROBE_TEXT})
        logprobs = await self._logprobs(ids)
        if len(ids) < 2 or len(logprobs) != len(ids) - 1:
            raise CannotScore(f"/v1/completions returned {len(logprobs)} prompt log-probabilities for {len(ids)} tokens")

    async def _treatment_sends_logprobs(self, treatment: BackendClient) -> bool:
        """Ask the treatment for two tokens with log-probabilities; any failure means the unpaired estimate."""
        body = logprobs.ask({"model": self.treatment_model, "prompt": _PROBE_TEXT, "max_tokens": 2, "temperature": 0},
                            "completions")
        try:
            response = await treatment.post_json("/v1/completions", body, self.config.timeout_s)
            choices = response.json().get("choices") if response.status == 200 else None
            paired = bool(choices) and logprobs.of_choice(choices[0])[1] > 0
        except (Unreachable, ValueError, AttributeError, TypeError):
            stop_if_cancelled()
            paired = False
        if not paired:
            log.warning("live KL without the treatment's log-probabilities: the cross-entropy gap of different answers "
                        "(noisier) is judged instead")
        return paired

    async def score(self, sample: Sample) -> tuple[float, int]:
        """The control's summed negative log-likelihood of the answer's tokens, and their number."""
        if sample.endpoint == "chat":
            extra = {"tools": sample.tools} if sample.tools else {}
            prefix = await self._tokenize({"messages": sample.prompt, "add_generation_prompt": True, **extra})
            answered = [*sample.prompt, {"role": "assistant", "content": sample.answer}]
            full = await self._tokenize({"messages": answered, "add_generation_prompt": False,
                                         "continue_final_message": True, **extra})
        else:
            prefix = await self._tokenize({"prompt": sample.prompt})
            full = await self._tokenize({"prompt": sample.prompt + sample.answer})
        start = _common_prefix(prefix, full)
        if start == 0 or start == len(full):
            return 0.0, 0
        logprobs = await self._logprobs(full)  # logprobs[i] is that of full[i + 1]
        answer = logprobs[start - 1:]
        return -sum(answer), len(answer)

    async def _tokenize(self, payload: dict[str, Any]) -> list[int]:
        response = await self.client.post_json("/tokenize", {"model": self.model, **payload}, self.config.timeout_s)
        if response.status >= 500:
            raise ControlFailed(f"/tokenize answered HTTP {response.status}")
        tokens = response.json().get("tokens") if response.status == 200 else None
        if not isinstance(tokens, list) or not all(isinstance(t, int) for t in tokens):
            raise CannotScore(f"/tokenize answered HTTP {response.status} without token ids")
        return tokens

    async def _logprobs(self, ids: list[int]) -> list[float]:
        """Log-probability of each token after the first, given the ones before it."""
        body = {"model": self.model, "prompt": ids, "max_tokens": 1, "temperature": 0, "prompt_logprobs": 0}
        response = await self.client.post_json("/v1/completions", body, self.config.timeout_s)
        if response.status >= 500:
            raise ControlFailed(f"/v1/completions answered HTTP {response.status}")
        choices = response.json().get("choices") if response.status == 200 else None
        entries = choices[0].get("prompt_logprobs") if choices else None
        if not isinstance(entries, list) or len(entries) != len(ids):
            raise CannotScore(f"/v1/completions answered HTTP {response.status} without prompt_logprobs")
        return [float(entry[str(token)]["logprob"]) for token, entry in zip(ids[1:], entries[1:], strict=True)]


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n
