"""Liveness and readiness, decided from what the health server observed."""

from __future__ import annotations

import pytest

from mixpanel_dsr.readiness import ReadyReason, Role, alive, readiness


@pytest.mark.parametrize(
    ("role", "api", "engine", "ready", "reason"),
    [
        (Role.LEADING, True, True, True, ReadyReason.LEADING),
        (Role.LEADING, True, False, False, ReadyReason.ENGINE_STARTING),
        (Role.LEADING, False, True, False, ReadyReason.API_SERVER_UNREACHABLE),
        (Role.STANDING_BY, True, False, True, ReadyReason.STANDING_BY),
        (Role.STANDING_BY, False, False, False, ReadyReason.API_SERVER_UNREACHABLE),
    ],
)
def test_readiness(role: Role, api: bool, engine: bool, ready: bool, reason: ReadyReason) -> None:
    found = readiness(role=role, api_server_answers=api, engine_started=engine)
    assert (found.ready, found.reason) == (ready, reason)


def test_a_standby_is_alive_and_a_worker_once_started() -> None:
    assert alive(role=Role.STANDING_BY, engine_started=False)
    assert not alive(role=Role.LEADING, engine_started=False)
    assert alive(role=Role.LEADING, engine_started=True)
