"""A retrieval's export link and its expiry: when to warn, and the condition that says so.

Mixpanel's export link is valid 14 days after the retrieval finished (fact sheet). The
operator counts from the earliest ``completionTime`` of the Succeeded retrieval tasks that
cover the request (when a status check found them finished, at most one poll interval after
Mixpanel finished), falling back to the request's own ``completionTime``. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from enum import StrEnum

from mixpanel_dsr.api.models import Condition
from mixpanel_dsr.conditions import get_condition, set_condition

#: The condition type on a Retrieval DataSubjectRequest with an export link.
EXPORT_LINK_EXPIRING = "ExportLinkExpiring"


class LinkState(StrEnum):
    """Where an export link stands; the value is the condition's reason."""

    VALID = "LinkValid"
    EXPIRES_SOON = "LinkExpiresSoon"
    EXPIRED = "LinkExpired"


#: The Event a request gets when its link enters a state (none for VALID).
EVENT_REASONS = {
    LinkState.EXPIRES_SOON: "ExportLinkExpiring",
    LinkState.EXPIRED: "ExportLinkExpired",
}


def link_expiry(
    task_completions: Iterable[datetime | None],
    request_completion: datetime | None,
    ttl: timedelta,
) -> datetime | None:
    """When the request's first export link expires: its earliest link's time plus ``ttl``."""
    known = [t for t in task_completions if t is not None]
    start = min(known) if known else request_completion
    return start + ttl if start is not None else None


def link_state(expires_at: datetime, now: datetime, warning: timedelta) -> LinkState:
    if now >= expires_at:
        return LinkState.EXPIRED
    if now >= expires_at - warning:
        return LinkState.EXPIRES_SOON
    return LinkState.VALID


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def link_condition(
    conditions: list[Condition] | None,
    *,
    secret: str,
    expires_at: datetime,
    now: datetime,
    warning: timedelta,
    generation: int | None,
) -> tuple[list[Condition], LinkState | None]:
    """The request's conditions with ``ExportLinkExpiring`` up to date, and the state to
    announce with an Event: one the condition enters now and that deserves a warning (none
    when the condition already said so, e.g. after a restart)."""
    state = link_state(expires_at, now, warning)
    current = list(conditions or [])
    before = get_condition(current, EXPORT_LINK_EXPIRING)
    messages = {
        LinkState.VALID: f"the export link in Secret {secret} is valid until about "
        f"{_when(expires_at)}",
        LinkState.EXPIRES_SOON: f"the export link in Secret {secret} expires at about "
        f"{_when(expires_at)}: download the export before then",
        LinkState.EXPIRED: f"the export link in Secret {secret} expired at about "
        f"{_when(expires_at)}; create a new Retrieval request for a fresh export",
    }
    updated = set_condition(
        current, EXPORT_LINK_EXPIRING, state is not LinkState.VALID, state.value,
        messages[state], generation=generation, now=now,
    )  # fmt: skip
    entered = before is None or before.reason != state.value
    announce = state if entered and state in EVENT_REASONS else None
    return updated, announce
