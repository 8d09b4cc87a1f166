"""Pure status mapping: from a request's coverage (see :mod:`.ledger`) to its phase, counts
and conditions. Nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from mixpanel_dsr.api.models import (
    Condition,
    DataSubjectRequestStatus,
    Phase,
)
from mixpanel_dsr.conditions import remove_condition, set_condition
from mixpanel_dsr.deadlines import at_risk
from mixpanel_dsr.ledger import Coverage


def phase_of(c: Coverage, *, dry_run: bool) -> Phase:
    """The printer-column phase for a request's coverage."""
    if c.total and c.done == c.total:
        return Phase.SUCCEEDED
    if c.in_flight or (c.pending and not dry_run):
        if c.started or c.done:
            return Phase.IN_PROGRESS
        if c.in_flight:
            return Phase.SUBMITTED
        return Phase.QUEUED
    if c.failed:
        return Phase.FAILED
    if c.revoked:
        return Phase.CANCELLED
    return Phase.PENDING


#: The reason of the blocker that holds a request until a second person approves it.
AWAITING_APPROVAL = "AwaitingApproval"


@dataclass(frozen=True)
class Blocker:
    """Why a request cannot proceed now; it needs a person (Stalled) unless ``transient``."""

    reason: str
    message: str
    transient: bool = False


def compose_status(
    previous: DataSubjectRequestStatus | None,
    *,
    generation: int | None,
    coverage: Coverage,
    dry_run: bool,
    planned_tasks: int | None = None,
    deadline: datetime | None,
    now: datetime,
    at_risk_margin: timedelta,
    blocker: Blocker | None = None,
) -> DataSubjectRequestStatus:
    """The whole status a request should show, from what is known of its tasks."""
    t = coverage
    total = t.total
    phase = phase_of(t, dry_run=dry_run)
    if blocker and phase in (Phase.QUEUED, Phase.PENDING) and not t.in_flight:
        phase = Phase.AWAITING_APPROVAL if blocker.reason == AWAITING_APPROVAL else Phase.PENDING
    conds: list[Condition] = list(previous.conditions or []) if previous else []

    def put(type_: str, status: bool, reason: str, message: str) -> None:
        nonlocal conds
        conds = set_condition(conds, type_, status, reason, message, generation=generation, now=now)

    finished = phase in (Phase.SUCCEEDED, Phase.FAILED, Phase.CANCELLED)
    progress = f"{t.done} of {total} ids done"
    if phase is Phase.SUCCEEDED:
        put("Ready", True, "Succeeded", f"Mixpanel reported SUCCESS for all {total} ids")
    elif phase is Phase.FAILED:
        put("Ready", False, "TaskFailed", f"{t.failed} ids failed: {t.failure_message}")
    elif phase is Phase.CANCELLED:
        put("Ready", False, "Cancelled", f"Mixpanel task revoked for {t.revoked} ids")
    elif blocker:
        put("Ready", False, blocker.reason, blocker.message)
    elif dry_run:
        put(
            "Ready", False, "DryRun",
            f"would take {planned_tasks or 0} Mixpanel tasks; set spec.dryRun false to send them",
        )  # fmt: skip
    else:
        put("Ready", False, phase.value, progress)

    if blocker and not blocker.transient:
        put("Stalled", True, blocker.reason, blocker.message)
    elif phase is Phase.FAILED:
        put("Stalled", True, "TaskFailed", f"{t.failed} ids failed: {t.failure_message}")
    elif phase is Phase.CANCELLED:
        put(
            "Stalled", True, "Cancelled",
            f"Mixpanel task revoked for {t.revoked} ids outside the operator; create a new "
            "request to carry it out",
        )  # fmt: skip
    else:
        conds = remove_condition(conds, "Stalled")

    working = not finished and not dry_run and not (blocker and not blocker.transient)
    if working:
        reason = blocker.reason if blocker else phase.value
        put("Reconciling", True, reason, blocker.message if blocker else progress)
    else:
        conds = remove_condition(conds, "Reconciling")

    if deadline is not None:
        if finished:
            put("DeadlineAtRisk", False, "Finished", "the request has finished")
        elif now >= deadline:
            put("DeadlineAtRisk", True, "DeadlinePassed", "the statutory deadline has passed")
        elif at_risk(deadline, now, at_risk_margin):
            put("DeadlineAtRisk", True, "DeadlineNear", f"{progress} with the deadline near")
        else:
            put("DeadlineAtRisk", False, "OnTrack", "the deadline is not near")

    if t.ambiguous:
        put(
            "PossibleDuplicate",
            True,
            "CreateOutcomeLost",
            "a create call's answer was lost (crash or timeout after sending); Mixpanel may "
            "hold a duplicate task for some ids",
        )

    previous_completion = previous.completion_time if previous else None
    return DataSubjectRequestStatus(
        observed_generation=generation,
        phase=phase,
        conditions=conds,
        ids_total=total,
        ids_done=t.done,
        ids_failed=t.failed,
        progress=f"{t.done}/{total}",
        deadline=deadline,
        tasks=t.references or None,
        planned_tasks=planned_tasks if dry_run else None,
        result_secret_ref=previous.result_secret_ref if previous else None,
        completion_time=(previous_completion or now) if finished else None,
    )
