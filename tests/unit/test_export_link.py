"""ExportLinkExpiring: when a retrieval's export link is about to expire, and has expired."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mixpanel_dsr.api.models import Condition
from mixpanel_dsr.conditions import get_condition, set_condition
from mixpanel_dsr.export_link import (
    EXPORT_LINK_EXPIRING,
    LinkState,
    link_condition,
    link_expiry,
    link_state,
)

T0 = datetime(2026, 11, 1, 12, tzinfo=UTC)
TTL, WARN = timedelta(days=14), timedelta(days=3)
EXPIRES = T0 + TTL


def test_the_first_link_sets_the_expiry() -> None:
    later = T0 + timedelta(days=2)
    assert link_expiry([later, None, T0], later, TTL) == EXPIRES
    assert link_expiry([], T0, TTL) == EXPIRES  # no task known: the request's completion
    assert link_expiry([None], None, TTL) is None


@pytest.mark.parametrize(
    ("now", "state"),
    [
        (T0, LinkState.VALID),
        (EXPIRES - WARN - timedelta(seconds=1), LinkState.VALID),
        (EXPIRES - WARN, LinkState.EXPIRES_SOON),
        (EXPIRES - timedelta(seconds=1), LinkState.EXPIRES_SOON),
        (EXPIRES, LinkState.EXPIRED),
        (EXPIRES + timedelta(days=30), LinkState.EXPIRED),
    ],
)
def test_state_by_time(now: datetime, state: LinkState) -> None:
    assert link_state(EXPIRES, now, WARN) is state


def _step(conditions: list[Condition], now: datetime) -> tuple[list[Condition], LinkState | None]:
    return link_condition(
        conditions, secret="r-export", expires_at=EXPIRES, now=now, warning=WARN, generation=1
    )


def test_a_link_goes_valid_expiring_expired_with_one_event_each() -> None:
    ready = set_condition([], "Ready", True, "Succeeded", "done", generation=1, now=T0)
    conds, announce = _step(ready, T0)
    valid = get_condition(conds, EXPORT_LINK_EXPIRING)
    assert valid is not None
    assert (valid.status, valid.reason) == ("False", "LinkValid")
    assert "2026-11-15T12:00:00Z" in valid.message
    assert announce is None
    assert get_condition(conds, "Ready") == ready[0]  # the others are left alone

    soon = EXPIRES - timedelta(days=2)
    conds, announce = _step(conds, soon)
    cond = get_condition(conds, EXPORT_LINK_EXPIRING)
    assert cond is not None
    assert (cond.status, cond.reason) == ("True", "LinkExpiresSoon")
    assert cond.last_transition_time == soon
    assert announce is LinkState.EXPIRES_SOON
    assert _step(conds, soon + timedelta(hours=1))[1] is None  # said once

    conds, announce = _step(conds, EXPIRES)
    cond = get_condition(conds, EXPORT_LINK_EXPIRING)
    assert cond is not None
    assert (cond.status, cond.reason) == ("True", "LinkExpired")
    assert cond.last_transition_time == soon  # still True: the transition stays
    assert announce is LinkState.EXPIRED
    assert _step(conds, EXPIRES + timedelta(days=1))[1] is None


def test_an_operator_down_through_the_warning_announces_only_the_expiry() -> None:
    conds, _ = _step([], T0)
    conds, announce = _step(conds, EXPIRES + timedelta(hours=5))
    assert announce is LinkState.EXPIRED
    cond = get_condition(conds, EXPORT_LINK_EXPIRING)
    assert cond is not None
    assert cond.reason == "LinkExpired"


def test_messages_name_the_secret_never_a_link() -> None:
    for now in (T0, EXPIRES - WARN, EXPIRES):
        conds, _ = _step([], now)
        cond = get_condition(conds, EXPORT_LINK_EXPIRING)
        assert cond is not None
        assert "Secret r-export" in cond.message
        assert "http" not in cond.message
