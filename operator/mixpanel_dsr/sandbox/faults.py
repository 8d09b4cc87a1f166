"""Seeded fault injection: decides, call by call, what goes wrong (pure; the app carries it out)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from mixpanel_dsr.sandbox.config import FaultConfig


class FaultKind(StrEnum):
    """What the sandbox does instead of (or after) answering a GDPR API call."""

    BURST_429 = "burst_429"
    ERROR = "error"
    DROP = "drop"
    MALFORMED = "malformed"
    LOST_RESPONSE = "lost_response"


@dataclass(frozen=True)
class FaultDecision:
    """The faults of one call: a delay first, then at most one of the kinds above."""

    latency: float = 0.0
    kind: FaultKind | None = None
    #: The HTTP status of an ``ERROR`` fault.
    status: int | None = None


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

    def decide(self) -> FaultDecision:
        """The faults for the next call (called once per GDPR API call)."""
        cfg = self.config
        latency = cfg.latency_seconds
        if cfg.latency_jitter_seconds > 0:
            latency += self._rng.uniform(0, cfg.latency_jitter_seconds)
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
        return FaultDecision(latency)
