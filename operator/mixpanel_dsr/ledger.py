"""The pure decision core over the ledger of Mixpanel tasks (MixpanelTask objects).

One MixpanelTask is one Mixpanel task; its spec (written once, before the create call)
names the request slices it holds. Everything a request shows is derived here from
the tasks that cover it, and every change of a task is a pure function of
``(task status, what was observed, now)``. The engine carries out what these functions
decide; nothing here does I/O.

Rules the functions keep (design invariants 7 and 8):
- a later task (higher ``sequence``) overrides an earlier one for the slices they share;
- an id is done only when the newest task that holds it reached SUCCESS;
- a task whose create answer was lost is sent again as itself (same ids, alone), with
  backoff, at most ``max_lost_answers`` times;
- a 409 makes only the ids Mixpanel named follow (or wait for) the running task;
- a packed task that fails is bisected, so one bad id fails only its own request.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from mixpanel_dsr.api.models import (
    MixpanelTaskSpec,
    MixpanelTaskStatus,
    TaskMember,
    TaskPhase,
    TaskReference,
)
from mixpanel_dsr.conditions import remove_condition, set_condition
from mixpanel_dsr.mixpanel.types import TaskState
from mixpanel_dsr.planning import Pending, PlannedTask, Range, pack, split, uncovered


@dataclass(frozen=True)
class Policy:
    """The knobs of the decisions; defaults suit production."""

    #: A failed slice is submitted this many times in all before its request fails.
    max_attempts: int = 3
    #: A create whose answer was lost is sent again at most this many times in all.
    max_lost_answers: int = 6
    #: First wait before a create is tried again; doubles per try up to ``retry_max``.
    retry_base: float = 30.0
    retry_max: float = 3600.0

    def backoff(self, tries: int) -> timedelta:
        seconds = min(self.retry_base * 2 ** max(tries - 1, 0), self.retry_max)
        return timedelta(seconds=seconds)


@dataclass
class Task:
    """One MixpanelTask as the core sees it."""

    name: str
    spec: MixpanelTaskSpec
    status: MixpanelTaskStatus = field(default_factory=MixpanelTaskStatus)

    @property
    def phase(self) -> TaskPhase:
        return self.status.phase or TaskPhase.CREATING

    @property
    def is_deletion(self) -> bool:
        return self.spec.type.value == "Deletion"


# ---------------------------------------------------------------------- coverage


@dataclass(frozen=True)
class PendingSlice:
    """Ids of a request that wait for a (new) task."""

    range: Range
    attempt: int = 1
    #: None: may be packed with any waiting ids; else only with slices of the same group
    #: (the halves of a failed packed task, or a slice retried alone).
    group: str | None = None
    retry_of: str | None = None


@dataclass
class Coverage:
    """Where every id of one request stands, derived from the tasks that cover it."""

    total: int
    done: int = 0
    in_flight: int = 0
    started: int = 0
    failed: int = 0
    revoked: int = 0
    pending: list[PendingSlice] = field(default_factory=list)
    failure_message: str = ""
    #: A create's answer was lost for some of these ids: Mixpanel may hold a duplicate.
    ambiguous: bool = False
    references: list[TaskReference] = field(default_factory=list)

    @property
    def pending_ids(self) -> int:
        return sum(len(p.range) for p in self.pending)


@dataclass(frozen=True)
class Slice:
    """One request's share of one task."""

    task: Task
    member: int

    @property
    def range(self) -> Range:
        m = self.task.spec.members[self.member]
        return Range(m.start, m.end)


def _newest_first_segments(slices: Sequence[Slice]) -> list[tuple[Range, Slice]]:
    """Disjoint ranges, each with the newest slice (highest task sequence) that covers it."""
    segments: list[tuple[Range, Slice]] = []
    for s in sorted(slices, key=lambda s: (s.task.spec.sequence, s.range.start)):
        new = s.range
        kept: list[tuple[Range, Slice]] = []
        for rng, owner in segments:
            if rng.end <= new.start or rng.start >= new.end:
                kept.append((rng, owner))
                continue
            if rng.start < new.start:
                kept.append((Range(rng.start, new.start), owner))
            if rng.end > new.end:
                kept.append((Range(new.end, rng.end), owner))
        kept.append((new, s))
        segments = sorted(kept, key=lambda seg: seg[0])
    return segments


def cover(
    total: int, slices: Sequence[Slice], policy: Policy, *, retried_at: datetime | None = None
) -> Coverage:
    """Where each of a request's ``total`` ids stands, from the slices of tasks holding them.

    ``retried_at``: a person asked to retry the request's failed ids then; ids whose task
    ended Failed (attempts spent) or Lost before it are sent again, alone, from attempt 1.
    """
    result = Coverage(total=total)
    segments = _newest_first_segments(slices)
    for rng, s in segments:
        task = s.task
        member = task.spec.members[s.member]
        size = len(rng)
        phase = task.phase
        if task.status.ambiguous:
            result.ambiguous = True
        if phase is TaskPhase.SUCCEEDED:
            result.done += size
        elif phase in (TaskPhase.CREATING, TaskPhase.SUBMITTED, TaskPhase.STARTED):
            result.in_flight += size
            if phase is TaskPhase.STARTED:
                result.started += size
        elif phase is TaskPhase.REVOKED:
            result.revoked += size
        elif phase in (TaskPhase.CANCELLED, TaskPhase.SPLIT):
            result.pending.append(PendingSlice(rng, member.attempt, None, task.name))
        elif phase is TaskPhase.FAILED:
            members = task.spec.members
            if len(members) > 1:
                half = 0 if s.member < len(members) // 2 else 1
                result.pending.append(
                    PendingSlice(rng, member.attempt, f"{task.name}/{half}", task.name)
                )
            elif member.attempt < policy.max_attempts:
                result.pending.append(PendingSlice(rng, member.attempt + 1, task.name, task.name))
            elif _retried(task, retried_at):
                result.pending.append(PendingSlice(rng, 1, task.name, task.name))
            else:
                result.failed += size
                result.failure_message = task.status.message or "Mixpanel reported FAILURE"
        elif phase is TaskPhase.LOST:
            if _retried(task, retried_at):
                result.pending.append(PendingSlice(rng, 1, task.name, task.name))
            else:
                result.failed += size
                result.failure_message = task.status.message or "the create call was never answered"
    covered = [rng for rng, _ in segments]
    result.pending += [PendingSlice(gap) for gap in uncovered(total, covered)]
    result.pending.sort(key=lambda p: p.range)
    result.references = [
        TaskReference(
            name=s.task.name,
            tracking_id=s.task.status.tracking_id,
            start=s.range.start,
            end=s.range.end,
            phase=s.task.phase,
            attempt=s.task.spec.members[s.member].attempt,
            submitted_at=s.task.status.submitted_at,
            message=s.task.status.message if s.task.phase.terminal else None,
        )
        for s in sorted(slices, key=lambda s: (s.task.spec.sequence, s.range.start))
    ]
    return result


def _retried(task: Task, retried_at: datetime | None) -> bool:
    done = task.status.completion_time
    return retried_at is not None and done is not None and done <= retried_at


# ---------------------------------------------------------------------- planning


@dataclass(frozen=True)
class Waiting:
    """A request's pending slice with its ids, ready to be planned."""

    owner: str
    slice: PendingSlice
    ids: tuple[str, ...]


@dataclass
class NewTask:
    """A task to write (and then create): planned ids and the slices they come from."""

    planned: PlannedTask
    retry_of: str | None = None


def plan(waiting: Sequence[Waiting], limit: int, *, deletion: bool) -> list[NewTask]:
    """Waiting slices into new tasks: deletions packed (each group apart), retrievals alone."""
    groups: dict[str | None, list[Waiting]] = {}
    for w in waiting:
        key = w.slice.group if deletion else f"{w.owner}#{w.slice.group or ''}"
        groups.setdefault(key, []).append(w)
    tasks: list[NewTask] = []
    for key, items in groups.items():
        pending = [Pending(w.owner, w.slice.range, w.ids, w.slice.attempt) for w in items]
        retry_of = next((w.slice.retry_of for w in items if w.slice.retry_of), None)
        if deletion:
            planned = pack(pending, limit)
        else:
            planned = [t for p in pending for t in split(p, limit)]
        tasks += [NewTask(t, retry_of if key is not None else None) for t in planned]
    return tasks


# ---------------------------------------------------------------------- task transitions


class CreateResult(StrEnum):
    """What a create call came back with."""

    CREATED = "Created"
    #: Sent, answer lost (timeout after sending, dropped connection, crash): may exist.
    LOST = "Lost"
    #: Certainly not created, and worth trying again later (429/5xx exhausted, auth, ...).
    NOT_CREATED = "NotCreated"
    #: Certainly not created, and trying again would be refused the same way (4xx).
    REFUSED = "Refused"
    #: 409: some ids already belong to running deletions.
    CONFLICT = "Conflict"


@dataclass(frozen=True)
class CreateOutcome:
    result: CreateResult
    tracking_id: str | None = None
    message: str = ""
    #: For CONFLICT: which member slices conflict (member index, range), and the named tasks.
    conflicts: tuple[tuple[int, Range], ...] = ()
    conflicting_tasks: tuple[str, ...] = ()


def conflict_ranges(
    members: Sequence[TaskMember], member_ids: Sequence[Sequence[str]], conflicting: set[str]
) -> tuple[tuple[int, Range], ...]:
    """The runs of each member's slice whose ids Mixpanel named as conflicting."""
    runs: list[tuple[int, Range]] = []
    for n, (member, ids) in enumerate(zip(members, member_ids, strict=True)):
        run_start: int | None = None
        for offset, distinct_id in enumerate(ids):
            index = member.start + offset
            if distinct_id in conflicting:
                if run_start is None:
                    run_start = index
            elif run_start is not None:
                runs.append((n, Range(run_start, index)))
                run_start = None
        if run_start is not None:
            runs.append((n, Range(run_start, member.end)))
    return tuple(runs)


@dataclass
class Decision:
    """A task's new status, and a task to write before it (the 409 follower), if any."""

    status: MixpanelTaskStatus
    follower: tuple[MixpanelTaskSpec, MixpanelTaskStatus] | None = None


def _with(status: MixpanelTaskStatus, **changes: object) -> MixpanelTaskStatus:
    return MixpanelTaskStatus.model_validate({**status.model_dump(), **changes})


def after_create(
    task: Task, outcome: CreateOutcome, now: datetime, policy: Policy, *, next_sequence: int
) -> Decision:
    """The task's status after its create call returned ``outcome``."""
    st = task.status
    calls = (st.create_calls or 0) + (0 if outcome.result is CreateResult.NOT_CREATED else 1)
    if outcome.result is CreateResult.CREATED:
        return Decision(
            _with(
                st,
                phase=TaskPhase.SUBMITTED,
                tracking_id=outcome.tracking_id,
                mixpanel_state=TaskState.PENDING,
                create_calls=calls,
                submitted_at=now,
                next_attempt_at=None,
                message=None,
            )
        )
    if outcome.result is CreateResult.LOST:
        lost = (st.lost_answers or 0) + 1
        if lost >= policy.max_lost_answers:
            return Decision(
                _with(
                    st,
                    phase=TaskPhase.LOST,
                    create_calls=calls,
                    lost_answers=lost,
                    ambiguous=True,
                    next_attempt_at=None,
                    completion_time=now,
                    message=f"Mixpanel never answered {lost} create calls for this task "
                    "readably (timeouts, dropped connections, gateway errors or unreadable "
                    "bodies); its ids are not sent again: check Mixpanel for a task holding "
                    "them, and once Mixpanel answers again, kubectl dsr retry sends them",
                )
            )
        return Decision(
            _with(
                st,
                create_calls=calls,
                lost_answers=lost,
                ambiguous=True,
                next_attempt_at=now + policy.backoff(lost),
                message="the create call's answer was lost; the same task is sent again alone",
            )
        )
    if outcome.result is CreateResult.NOT_CREATED:
        refused = (st.not_created or 0) + 1
        tries = (st.lost_answers or 0) + calls + refused
        return Decision(
            _with(
                st,
                not_created=refused,
                next_attempt_at=now + policy.backoff(min(tries, 16)),
                message=outcome.message or "Mixpanel did not create the task; trying again",
            )
        )
    if outcome.result is CreateResult.REFUSED:
        return Decision(
            _with(
                st,
                phase=TaskPhase.FAILED,
                create_calls=calls,
                next_attempt_at=None,
                completion_time=now,
                message=outcome.message or "Mixpanel refused the task",
            )
        )
    return _after_conflict(task, outcome, now, policy, calls, next_sequence)


def _after_conflict(
    task: Task,
    outcome: CreateOutcome,
    now: datetime,
    policy: Policy,
    calls: int,
    next_sequence: int,
) -> Decision:
    st = task.status
    members = task.spec.members
    named = len(outcome.conflicting_tasks)
    everything = sum(len(r) for _, r in outcome.conflicts) == sum(m.end - m.start for m in members)
    if everything and named == 1:
        return Decision(_adopted(st, outcome.conflicting_tasks[0], now, calls))
    if everything or not outcome.conflicts:
        waits = (st.create_calls or 0) + 1
        return Decision(
            _with(
                st,
                create_calls=calls,
                next_attempt_at=now + policy.backoff(waits),
                message=f"every id is already being deleted by {named} running Mixpanel "
                "tasks; this task is sent again once they finish",
            )
        )
    follower_members = [
        TaskMember(
            namespace=members[n].namespace,
            name=members[n].name,
            uid=members[n].uid,
            start=rng.start,
            end=rng.end,
            attempt=members[n].attempt,
        )
        for n, rng in outcome.conflicts
    ]
    count = sum(len(r) for _, r in outcome.conflicts)
    spec = task.spec.model_copy(
        update={
            "members": follower_members,
            "id_count": count,
            "ids_digest": "",
            "sequence": next_sequence,
            "retry_of": task.name,
        }
    )
    if named == 1:
        follower_status = _adopted(MixpanelTaskStatus(), outcome.conflicting_tasks[0], now, 0)
    else:
        follower_status = MixpanelTaskStatus(
            phase=TaskPhase.CREATING,
            next_attempt_at=now + policy.backoff(1),
            message=f"these ids are already being deleted by {named} running Mixpanel tasks; "
            "sent once they finish",
        )
    status = _with(
        st,
        phase=TaskPhase.SPLIT,
        create_calls=calls,
        next_attempt_at=None,
        completion_time=now,
        message=f"Mixpanel refused the task (409): {count} of its ids are already being "
        "deleted; those follow the running task, the others were queued again",
    )
    return Decision(status, (spec, follower_status))


def _adopted(
    st: MixpanelTaskStatus, tracking_id: str, now: datetime, calls: int
) -> MixpanelTaskStatus:
    return _with(
        st,
        phase=TaskPhase.SUBMITTED,
        tracking_id=tracking_id,
        adopted=True,
        mixpanel_state=TaskState.PENDING,
        create_calls=calls,
        submitted_at=now,
        next_attempt_at=None,
        message="Mixpanel already had a running deletion of exactly these ids (409); following it",
    )


_PHASE_OF_STATE = {
    TaskState.PENDING: TaskPhase.SUBMITTED,
    TaskState.STAGING: TaskPhase.SUBMITTED,
    TaskState.UNKNOWN: TaskPhase.SUBMITTED,
    TaskState.STARTED: TaskPhase.STARTED,
    TaskState.SUCCESS: TaskPhase.SUCCEEDED,
    TaskState.FAILURE: TaskPhase.FAILED,
    TaskState.NOT_FOUND: TaskPhase.FAILED,
    TaskState.REVOKED: TaskPhase.REVOKED,
}

_STATE_MESSAGES = {
    TaskState.FAILURE: "Mixpanel reported FAILURE for the task",
    TaskState.NOT_FOUND: "Mixpanel no longer knows the task (NOT_FOUND)",
    TaskState.REVOKED: "the task was cancelled in Mixpanel, outside the operator",
}

#: How often a task's checkedAt is written when its state does not change.
CHECKED_AT_REFRESH = timedelta(hours=1)


def after_poll(
    task: Task, state: TaskState, now: datetime, *, ours_to_cancel: bool = False
) -> MixpanelTaskStatus | None:
    """The task's status after Mixpanel reported ``state``; None when nothing needs writing.

    ``ours_to_cancel``: a request the task serves was deleted, so a REVOKED is the operator's
    own cancel (its answer lost in a crash), not one made outside it.
    """
    st = task.status
    phase = _PHASE_OF_STATE[state]
    if phase is TaskPhase.REVOKED and ours_to_cancel:
        return after_cancel(task, now, _CANCELLED_FOR_DELETION)
    if task.phase is TaskPhase.STARTED and phase is TaskPhase.SUBMITTED:
        phase = TaskPhase.STARTED  # UNKNOWN after STARTED: a lookup error, not a step back
    changed = phase is not task.phase or state is not st.mixpanel_state
    stale = st.checked_at is None or now - st.checked_at >= CHECKED_AT_REFRESH
    if not changed and not stale:
        return None
    updates: dict[str, object] = {"phase": phase, "mixpanel_state": state, "checked_at": now}
    if phase.terminal:
        updates["completion_time"] = now
        updates["message"] = _STATE_MESSAGES.get(state)
    elif state is TaskState.UNKNOWN:
        updates["message"] = _UNKNOWN_MESSAGE
    elif st.message == _UNKNOWN_MESSAGE:
        updates["message"] = None
    return _with(st, **updates)


#: While Mixpanel answers UNKNOWN (or a state the operator does not know, read as UNKNOWN).
_UNKNOWN_MESSAGE = (
    "Mixpanel did not tell the task's state (UNKNOWN, or a state this operator does not "
    "know); it is asked again at the polling pace. If it lasts for days, ask Mixpanel "
    "support about the tracking id"
)


_CANCELLED_FOR_DELETION = (
    "cancelled because a request it was for was deleted; the other requests' ids were queued again"
)


def after_cancel(
    task: Task, now: datetime, why: str = _CANCELLED_FOR_DELETION
) -> MixpanelTaskStatus:
    """The operator cancelled the task (or dropped it before it was ever created)."""
    return _with(
        task.status,
        phase=TaskPhase.CANCELLED,
        mixpanel_state=TaskState.REVOKED if task.status.tracking_id else None,
        next_attempt_at=None,
        completion_time=now,
        message=why,
    )


def needs_cancel(task: Task, gone: set[str]) -> bool:
    """A live deletion that serves a request that is gone."""
    if task.phase.terminal:
        return False
    return any(m.uid in gone for m in task.spec.members)


def cancellable(task: Task) -> bool:
    """Mixpanel accepts a cancel of this task now (a deletion still PENDING or STAGING)."""
    return (
        task.is_deletion
        and task.phase is TaskPhase.SUBMITTED
        and task.status.mixpanel_state in (TaskState.PENDING, TaskState.STAGING, None)
    )


# ---------------------------------------------------------------------- polling cadence


def first_check_delay(task: Task, now: datetime, initial: float, maximum: float) -> float:
    """Seconds until a task found at start-up is checked: spread over its current interval,
    so a restart with thousands of tasks does not check them all at once."""
    since = task.status.checked_at or task.status.submitted_at
    age = (now - since).total_seconds() if since else 0.0
    interval = min(max(initial, age / 2), maximum)
    return random.uniform(0, interval)  # noqa: S311 - jitter, not security


def next_interval(
    previous: float, changed: bool, initial: float, factor: float, maximum: float
) -> float:
    """Adaptive polling: back to ``initial`` after a change, else back off by ``factor``."""
    base = initial if changed else min(previous * factor, maximum)
    return base * random.uniform(0.9, 1.1)  # noqa: S311 - jitter, not security


def live(tasks: Iterable[Task]) -> list[Task]:
    return [t for t in tasks if not t.phase.terminal]


# ---------------------------------------------------------------------- kstatus conditions

_READY_REASON = {
    TaskPhase.CREATING: "Creating",
    TaskPhase.SUBMITTED: "Submitted",
    TaskPhase.STARTED: "Started",
    TaskPhase.SUCCEEDED: "Succeeded",
    TaskPhase.FAILED: "Failed",
    TaskPhase.REVOKED: "Revoked",
    TaskPhase.CANCELLED: "Cancelled",
    TaskPhase.SPLIT: "Split",
    TaskPhase.LOST: "Lost",
}
#: Phases that end the task without its ids done and with nothing the operator will do next.
_STALLED = (TaskPhase.FAILED, TaskPhase.REVOKED, TaskPhase.LOST)


def with_conditions(status: MixpanelTaskStatus, now: datetime) -> MixpanelTaskStatus:
    """The task's Ready, Reconciling and Stalled conditions (kstatus) for its phase."""
    phase = status.phase or TaskPhase.CREATING
    reason = _READY_REASON[phase]
    message = status.message or f"Mixpanel task {phase.value.lower()}"
    conds = list(status.conditions or [])
    conds = set_condition(
        conds, "Ready", phase is TaskPhase.SUCCEEDED, reason, message, generation=1, now=now
    )
    if phase.terminal:
        conds = remove_condition(conds, "Reconciling")
    else:
        conds = set_condition(conds, "Reconciling", True, reason, message, generation=1, now=now)
    if phase in _STALLED:
        conds = set_condition(conds, "Stalled", True, reason, message, generation=1, now=now)
    else:
        conds = remove_condition(conds, "Stalled")
    return status.model_copy(update={"conditions": conds})
