"""Prometheus metrics of one core (``prometheus_client``), in a registry of its own: two cores
in one process (tests, a host bot with two bots) never mix their counts, and each worker
process serves its own (the dashboard's ``/metrics``).

The core feeds them where things happen: a turn's outcome and latency (``PersonaCore.
respond``), every model call by role (``LLMClient`` observers; ``llm_role`` says whose call
it is), each persona update's outcome (the learning loop), refusals (budgets here, the rate
limit from the adapter kit). ``active_sessions`` is read from the store when scraped.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from .errors import LLMError
from .insights import OUTCOMES

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
ROLES = ("chat", "optimizer")
TURN_OUTCOMES = ("ok", "llm_unavailable", "budget", "too_long", "empty", "error")
UPDATE_OUTCOMES = (*OUTCOMES, "retry")  # retry: a failed attempt that will be tried again
REFUSALS = ("rate_limit", "budget")
LLM_ERROR_KINDS = (
    "timeout",
    "connection",
    "rate_limit",
    "auth",
    "http",
    "malformed",
    "other",
)
# a chat turn takes tens of milliseconds to a minute (the model's latency dominates)
TURN_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    """The ``aipersona_*`` series of one core."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.messages = Counter(
            "aipersona_messages",
            "User messages handled, by outcome (ok, llm_unavailable, budget, too_long, empty,"
            " error)",
            ["outcome"],
            registry=r,
        )
        self.message_seconds = Histogram(
            "aipersona_message_seconds",
            "Time from a user message to its stored reply (the whole turn)",
            buckets=TURN_BUCKETS,
            registry=r,
        )
        self.llm_calls = Counter(
            "aipersona_llm_calls", "Model endpoint requests, by role", ["role"], registry=r
        )
        self.llm_errors = Counter(
            "aipersona_llm_errors",
            "Model endpoint requests that failed, by role and kind",
            ["role", "kind"],
            registry=r,
        )
        self.llm_tokens = Counter(
            "aipersona_llm_tokens",
            "Tokens the endpoint reported (or estimated), by role and kind (prompt, completion)",
            ["role", "kind"],
            registry=r,
        )
        self.llm_seconds = Histogram(
            "aipersona_llm_call_seconds",
            "Latency of one model endpoint request, by role",
            ["role"],
            buckets=TURN_BUCKETS,
            registry=r,
        )
        self.updates = Counter(
            "aipersona_persona_updates",
            "Persona update attempts, by outcome (applied, rejected, unchanged, failed, retry)",
            ["outcome"],
            registry=r,
        )
        self.active_sessions = Gauge(
            "aipersona_active_sessions",
            "Open sessions in the store when scraped (every worker sees the same store)",
            registry=r,
        )
        self.refusals = Counter(
            "aipersona_refusals",
            "Messages refused before the model was called, by reason (rate_limit, budget)",
            ["reason"],
            registry=r,
        )
        for outcome in TURN_OUTCOMES:  # every series present from the start, at zero
            self.messages.labels(outcome)
        for role in ROLES:
            self.llm_calls.labels(role)
            self.llm_seconds.labels(role)
            for kind in ("prompt", "completion"):
                self.llm_tokens.labels(role, kind)
        for outcome in UPDATE_OUTCOMES:
            self.updates.labels(outcome)
        for reason in REFUSALS:
            self.refusals.labels(reason)

    def turn(self, outcome: str, seconds: float) -> None:
        """A user message was handled (``Reply.error`` or "ok"; "error" if it raised)."""
        self.messages.labels(outcome).inc()
        self.message_seconds.observe(seconds)
        if outcome == "budget":
            self.refused("budget")

    def llm_call(
        self,
        role: str,
        prompt_tokens: int,
        completion_tokens: int,
        error: LLMError | None,
        seconds: float,
    ) -> None:
        """One request to the model endpoint (an ``LLMClient`` observer)."""
        self.llm_calls.labels(role).inc()
        self.llm_seconds.labels(role).observe(seconds)
        if error is not None:
            self.llm_errors.labels(role, error_kind(error)).inc()
            return
        self.llm_tokens.labels(role, "prompt").inc(prompt_tokens)
        self.llm_tokens.labels(role, "completion").inc(completion_tokens)

    def update(self, outcome: str) -> None:
        """A persona update attempt ended (``UPDATE_OUTCOMES``)."""
        self.updates.labels(outcome).inc()

    def refused(self, reason: str) -> None:
        """A message refused before the model saw it (``REFUSALS``)."""
        self.refusals.labels(reason).inc()

    def exposition(self) -> bytes:
        """The Prometheus text format of every series."""
        return generate_latest(self.registry)


def error_kind(error: LLMError) -> str:
    """A small fixed set of labels for an LLMError (no free text in label values)."""
    status = error.status_code
    text = str(error)
    if "timed out" in text:
        return "timeout"
    if "cannot reach" in text:
        return "connection"
    if status == 429:
        return "rate_limit"
    if status in (401, 403):
        return "auth"
    if status is not None:
        return "http"
    if "not a chat completion" in text or "JSON" in text or "stream ended" in text:
        return "malformed"
    return "other"
