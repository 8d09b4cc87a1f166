"""Seeded fault injection: decides, call by call, what goes wrong (pure; the app carries it out)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from mixpanel_dsr.sandbox.config import FaultConfig

#: Seconds in a day (``stuck_started_days`` is in days).
DAY = 86400.0


class FaultKind(StrEnum):
    """What the sandbox does instead of (or after) answering a GDPR API call."""

    BURST_429 = "burst_429"
    ERROR = "error"
    DROP = "drop"
    MALFORMED = "malformed"
    LOST_RESPONSE = "lost_response"
    #: 403 to everything (``forbidden``); nothing is done.
    FORBIDDEN = "forbidden"
    #: An HTML error page from a proxy (``html_error_status``); nothing is done.
    HTML_ERROR = "html_error"
    #: 200 with ``{"status": "error", ...}``; nothing is done.
    ERROR_BODY = "error_body"
    #: Carried out; the answer keeps its status and loses its body.
    EMPTY_BODY = "empty_body"
    #: Carried out; a status answer names a state the fact sheet does not list.
    UNKNOWN_STATE = "unknown_state"
    #: Carried out; the answer is held ``timeout_seconds`` before it is sent.
    TIMEOUT = "timeout"
    #: A deletion refused with 409 because its ids were sent before (``conflict_on_resend``).
    CONFLICT_ON_RESEND = "conflict_on_resend"


class TaskFault(StrEnum):
    """What was drawn for a new task when it was created."""

    VANISH = "vanish"
    STUCK_STARTED = "stuck_started"


@dataclass(frozen=True)
class FaultDecision:
    """The faults of one call: a delay first, then at most one of the kinds above."""

    latency: float = 0.0
    kind: FaultKind | None = None
    #: The HTTP status of an ``ERROR``, ``HTML_ERROR`` or ``FORBIDDEN`` fault.
    status: int | None = None
    #: The made-up state of an ``UNKNOWN_STATE`` fault.
    state: str | None = None
    #: How long a ``TIMEOUT`` holds the answer.
    hold: float = 0.0


@dataclass(frozen=True)
class TaskDecision:
    """What happens to a new task: it vanishes after ``vanish_after`` seconds, and/or stays
    STARTED ``stuck_seconds`` (unscaled) longer."""

    vanish_after: float | None = None
    stuck_seconds: float = 0.0

    @property
    def faults(self) -> tuple[TaskFault, ...]:
        found = []
        if self.vanish_after is not None:
            found.append(TaskFault.VANISH)
        if self.stuck_seconds > 0:
            found.append(TaskFault.STUCK_STARTED)
        return tuple(found)


class FaultInjector:
    """Draws faults from the configured rates with its own seeded RNG."""

    def __init__(self, config: FaultConfig) -> None:
        self.configure(config)

    def configure(self, config: FaultConfig) -> None:
        """Replace the whole fault configuration (re-seeds the RNG)."""
        self.config = config
        self.burst_remaining = config.burst_429
        self._rng = random.Random(config.seed)  # noqa: S311 - simulation, not security

    def update(self, changes: dict[str, Any]) -> FaultConfig:
        """Change some fields; the RNG is re-seeded only when ``seed`` is among them.

        Setting ``burst_429`` (re)starts a burst of that many 429 answers.
        """
        merged = FaultConfig.model_validate({**self.config.model_dump(), **changes})
        self.config = merged
        if "burst_429" in changes:
            self.burst_remaining = merged.burst_429
        if "seed" in changes:
            self._rng = random.Random(merged.seed)  # noqa: S311
        return merged

    def snapshot(self) -> dict[str, Any]:
        data: dict[str, Any] = self.config.model_dump(mode="json")
        data["burst_remaining"] = self.burst_remaining
        return data

    def _hit(self, rate: float) -> bool:
        return rate > 0 and self._rng.random() < rate

    def decide(self, *, status_call: bool = False) -> FaultDecision:
        """The faults for the next call (called once per GDPR API call).

        ``status_call``: the call asks for a task's status (only those get unknown states).
        Rates of the misbehaviour modes are drawn after the older ones, and only when set, so
        a seed gives the same sequence of the older faults as before they existed.
        """
        cfg = self.config
        latency = cfg.latency_seconds
        if cfg.latency_jitter_seconds > 0:
            latency += self._rng.uniform(0, cfg.latency_jitter_seconds)
        if cfg.forbidden:
            return FaultDecision(latency, FaultKind.FORBIDDEN, 403)
        if self.burst_remaining > 0:
            self.burst_remaining -= 1
            return FaultDecision(latency, FaultKind.BURST_429, 429)
        if self._hit(cfg.error_rate):
            return FaultDecision(latency, FaultKind.ERROR, self._rng.choice(cfg.error_statuses))
        if self._hit(cfg.drop_rate):
            return FaultDecision(latency, FaultKind.DROP)
        if self._hit(cfg.malformed_rate):
            return FaultDecision(latency, FaultKind.MALFORMED, 200)
        if self._hit(cfg.lost_response_rate):
            return FaultDecision(latency, FaultKind.LOST_RESPONSE)
        if self._hit(cfg.html_error_rate):
            return FaultDecision(latency, FaultKind.HTML_ERROR, cfg.html_error_status)
        if self._hit(cfg.error_body_rate):
            return FaultDecision(latency, FaultKind.ERROR_BODY, 200)
        if self._hit(cfg.empty_body_rate):
            return FaultDecision(latency, FaultKind.EMPTY_BODY)
        if status_call and self._hit(cfg.unknown_state_rate):
            state = self._rng.choice(cfg.unknown_states)
            return FaultDecision(latency, FaultKind.UNKNOWN_STATE, state=state)
        if self._hit(cfg.timeout_rate):
            return FaultDecision(latency, FaultKind.TIMEOUT, hold=cfg.timeout_seconds)
        return FaultDecision(latency)

    def decide_task(self, time_scale: float) -> TaskDecision:
        """What happens to a task created now (called once per task created)."""
        cfg = self.config
        vanish = cfg.vanish_after_seconds if self._hit(cfg.vanish_rate) else None
        stuck = 0.0
        if self._hit(cfg.stuck_started_rate):
            stuck = cfg.stuck_started_days * DAY * time_scale
        return TaskDecision(vanish, stuck)


def combine(first: FaultDecision, second: FaultDecision | None) -> FaultDecision:
    """The sandbox-wide decision, then a project's own: delays add up, the first fault wins."""
    if second is None:
        return first
    kind = first if first.kind is not None else second
    return FaultDecision(
        first.latency + second.latency, kind.kind, kind.status, kind.state, kind.hold
    )


def combine_tasks(first: TaskDecision, second: TaskDecision | None) -> TaskDecision:
    if second is None:
        return first
    vanish = first.vanish_after if first.vanish_after is not None else second.vanish_after
    return TaskDecision(vanish, first.stuck_seconds + second.stuck_seconds)
