"""Conditions in the metav1.Condition shape, set the way kstatus and Argo CD expect."""

from __future__ import annotations

from datetime import datetime

from mixpanel_dsr.api.models import Condition, ConditionStatus


def set_condition(
    conditions: list[Condition],
    type_: str,
    status: bool | ConditionStatus,
    reason: str,
    message: str,
    *,
    generation: int | None,
    now: datetime,
) -> list[Condition]:
    """A copy of ``conditions`` with ``type_`` set; lastTransitionTime moves only when the
    status changes."""
    if isinstance(status, bool):
        status = ConditionStatus.TRUE if status else ConditionStatus.FALSE
    previous = next((c for c in conditions if c.type == type_), None)
    since = previous.last_transition_time if previous and previous.status == status else now
    updated = Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message,
        observed_generation=generation,
        last_transition_time=since,
    )
    return (
        [updated if c.type == type_ else c for c in conditions]
        if previous
        else [
            *conditions,
            updated,
        ]
    )


def remove_condition(conditions: list[Condition], type_: str) -> list[Condition]:
    """A copy without ``type_`` (for abnormal-true conditions that are no longer true)."""
    return [c for c in conditions if c.type != type_]


def get_condition(conditions: list[Condition] | None, type_: str) -> Condition | None:
    return next((c for c in conditions or [] if c.type == type_), None)
