"""Pure status mapping: from a request's task records to its phase, counts and conditions.

Each record covers ``[start, end)`` of the request's distinct ids; later
records override earlier ones for the ids they cover (a re-submitted slice
appends a new record and keeps the old one as history). Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from mixpanel_dsr.api.models import (
    Condition,
    DataSubjectRequestStatus,
    Phase,
    TaskRecord,
)
from mixpanel_dsr.conditions import remove_condition, set_condition
from mixpanel_dsr.deadlines import at_risk
from mixpanel_dsr.mixpanel.types import TaskState
from mixpanel_dsr.planning import Range, uncovered

IN_FLIGHT = {
    "Submitting",
    TaskState.PENDING,
    TaskState.STAGING,
    TaskState.STARTED,
    TaskState.UNKNOWN,
}
#: States after which the slice is tried again (if attempts are left).
RETRYABLE = {TaskState.FAILURE, TaskState.NOT_FOUND}
#: States after which the slice is simply queued again (no attempt is spent).
REQUEUED = {"Lost", "Superseded"}


@dataclass
class Tally:
    """Where every id of a request stands."""

    total: int
    done: int = 0
    in_flight: int = 0
    started: int = 0
    planned: int = 0
    failed: int = 0
    cancelled: int = 0
    #: Ranges to submit, each with the attempt number its next task will carry.
    pending: list[tuple[Range, int]] = field(default_factory=list)
    failure_message: str = ""
    ambiguous: bool = False

    @property
    def pending_ids(self) -> int:
        return sum(len(r) for r, _ in self.pending)


def _effective(records: Sequence[TaskRecord]) -> list[tuple[Range, TaskRecord]]:
    """Disjoint ranges, each with the newest record that covers it."""
    segments: list[tuple[Range, TaskRecord]] = []
    for record in records:
        new = Range(record.start, record.end)
        kept: list[tuple[Range, TaskRecord]] = []
        for rng, owner in segments:
            if rng.end <= new.start or rng.start >= new.end:
                kept.append((rng, owner))
                continue
            if rng.start < new.start:
                kept.append((Range(rng.start, new.start), owner))
            if rng.end > new.end:
                kept.append((Range(new.end, rng.end), owner))
        kept.append((new, record))
        segments = sorted(kept, key=lambda s: s[0])
    return segments


def tally(total: int, records: Sequence[TaskRecord], max_attempts: int) -> Tally:
    """Count done, in-flight, failed and pending ids from the task records."""
    result = Tally(total=total, ambiguous=any(r.ambiguous for r in records))
    segments = _effective(records)
    for rng, record in segments:
        size = len(rng)
        state = record.state
        if state == TaskState.SUCCESS:
            result.done += size
        elif state in IN_FLIGHT:
            result.in_flight += size
            if state == TaskState.STARTED:
                result.started += size
        elif state == "Planned":
            result.planned += size
        elif state == TaskState.REVOKED:
            result.cancelled += size
        elif state in RETRYABLE and record.attempt >= max_attempts:
            result.failed += size
            result.failure_message = record.message or f"Mixpanel reported {state}"
        elif state in RETRYABLE:
            result.pending.append((rng, record.attempt + 1))
        elif state in REQUEUED:
            result.pending.append((rng, record.attempt))
    covered = [rng for rng, _ in segments]
    result.pending += [(gap, 1) for gap in uncovered(total, covered)]
    result.pending.sort(key=lambda p: p[0])
    return result


def phase_of(t: Tally, *, dry_run: bool) -> Phase:
    """The printer-column phase for a tally."""
    if t.total and t.done == t.total:
        return Phase.SUCCEEDED
    if t.in_flight or (t.pending and not dry_run):
        if t.started or t.done:
            return Phase.IN_PROGRESS
        if t.in_flight:
            return Phase.SUBMITTED
        return Phase.QUEUED
    if t.failed:
        return Phase.FAILED
    if t.cancelled:
        return Phase.CANCELLED
    return Phase.PENDING


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
    total: int,
    records: list[TaskRecord],
    max_attempts: int,
    dry_run: bool,
    deadline: datetime | None,
    now: datetime,
    at_risk_margin: timedelta,
    blocker: Blocker | None = None,
) -> DataSubjectRequestStatus:
    """The whole status a request should show, from what is known of its tasks."""
    t = tally(total, records, max_attempts)
    phase = phase_of(t, dry_run=dry_run)
    if blocker and phase in (Phase.QUEUED, Phase.PENDING) and not t.in_flight:
        phase = Phase.PENDING
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
        put("Ready", False, "Cancelled", f"Mixpanel task revoked for {t.cancelled} ids")
    elif blocker:
        put("Ready", False, blocker.reason, blocker.message)
    elif dry_run:
        put("Ready", False, "DryRun", f"planned {len(records)} tasks; set spec.dryRun false")
    else:
        put("Ready", False, phase.value, progress)

    if blocker and not blocker.transient:
        put("Stalled", True, blocker.reason, blocker.message)
    elif phase is Phase.FAILED:
        put("Stalled", True, "TaskFailed", f"{t.failed} ids failed: {t.failure_message}")
    elif phase is Phase.CANCELLED:
        put(
            "Stalled", True, "Cancelled",
            f"Mixpanel task revoked for {t.cancelled} ids outside the operator; create a new "
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
        tasks=records,
        result_secret_ref=previous.result_secret_ref if previous else None,
        completion_time=(previous_completion or now) if finished else None,
    )
