"""When a replica is ready: a pure decision from what the health server observed.

Ready means "this replica can do its job": the API server answers it, and it either works
(the engine started: installation key read, workers running) or, with leader election,
stands by healthily to take over. A standby is ready on purpose: a rolling update with
``maxUnavailable: 0`` waits for the new pod to be ready before it stops the old one, and the
new pod cannot lead before the old one released the Lease.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    """What the replica does now."""

    #: Works: holds the Lease, or runs without leader election.
    LEADING = "Leading"
    #: Waits for the Lease, trying it every few seconds.
    STANDING_BY = "StandingBy"


class ReadyReason(StrEnum):
    """Why a replica is or is not ready (the /readyz body's ``reason``)."""

    LEADING = "Leading"
    STANDING_BY = "StandingBy"
    ENGINE_STARTING = "EngineStarting"
    API_SERVER_UNREACHABLE = "APIServerUnreachable"


@dataclass(frozen=True)
class Readiness:
    ready: bool
    reason: ReadyReason
    message: str


def alive(*, role: Role, engine_started: bool) -> bool:
    """Liveness: a standby is alive; a worker once its engine started (as kopf's own
    liveness endpoint answered only after the startup handlers)."""
    return role is Role.STANDING_BY or engine_started


def readiness(*, role: Role, api_server_answers: bool, engine_started: bool) -> Readiness:
    """Ready when the API server answers and the replica works or stands by."""
    if not api_server_answers:
        return Readiness(
            False, ReadyReason.API_SERVER_UNREACHABLE,
            "the Kubernetes API server did not answer (network policy, credentials, outage)",
        )  # fmt: skip
    if role is Role.STANDING_BY:
        return Readiness(True, ReadyReason.STANDING_BY, "standing by for the leader Lease")
    if not engine_started:
        return Readiness(
            False, ReadyReason.ENGINE_STARTING,
            "starting: logging in, reading the installation key, starting the workers",
        )  # fmt: skip
    return Readiness(True, ReadyReason.LEADING, "working")
