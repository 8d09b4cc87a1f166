"""The pure decision core: every transition of a task, table by table, and coverage rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from mixpanel_dsr.api.models import MixpanelTaskSpec, MixpanelTaskStatus, TaskPhase
from mixpanel_dsr.ledger import (
    CreateOutcome,
    CreateResult,
    PendingSlice,
    Policy,
    Slice,
    Task,
    Waiting,
    after_cancel,
    after_create,
    after_poll,
    cancellable,
    conflict_ranges,
    cover,
    needs_cancel,
    plan,
    with_conditions,
)
from mixpanel_dsr.mixpanel.types import TaskState
from mixpanel_dsr.planning import Range

NOW = datetime(2026, 11, 30, 12, tzinfo=UTC)
POLICY = Policy(max_attempts=3, max_lost_answers=3, retry_base=30, retry_max=3600)


def make_task(
    sequence: int,
    phase: str,
    members: list[tuple[str, int, int, int]],
    *,
    kind: str = "Deletion",
    **status: Any,
) -> Task:
    spec = MixpanelTaskSpec.model_validate(
        {
            "projectRef": {"name": "proj"},
            "type": kind,
            "complianceType": "GDPR",
            "members": [
                {"namespace": "ns", "name": uid, "uid": uid, "start": s, "end": e, "attempt": a}
                for uid, s, e, a in members
            ],
            "idCount": sum(e - s for _, s, e, _ in members),
            "idsDigest": "hmac-sha256:x",
            "sequence": sequence,
        }
    )
    st = MixpanelTaskStatus.model_validate({"phase": phase, **status})
    return Task(name=f"t{sequence}", spec=spec, status=st)


def created(**kw: Any) -> CreateOutcome:
    return CreateOutcome(CreateResult.CREATED, tracking_id="mp-1", **kw)


# ---------------------------------------------------------------------- after_create


@pytest.mark.parametrize(
    ("outcome", "before", "phase", "checks"),
    [
        (created(), {}, TaskPhase.SUBMITTED,
         {"tracking_id": "mp-1", "create_calls": 1, "mixpanel_state": TaskState.PENDING}),
        # Answer lost: same task, sent again after a backoff; a duplicate is possible.
        (CreateOutcome(CreateResult.LOST), {}, TaskPhase.CREATING,
         {"lost_answers": 1, "ambiguous": True, "next_attempt_at": NOW + timedelta(seconds=30)}),
        (CreateOutcome(CreateResult.LOST), {"lostAnswers": 1, "createCalls": 1},
         TaskPhase.CREATING, {"lost_answers": 2, "next_attempt_at": NOW + timedelta(seconds=60)}),
        # ... at most max_lost_answers times: then the ids are not sent again.
        (CreateOutcome(CreateResult.LOST), {"lostAnswers": 2, "createCalls": 2}, TaskPhase.LOST,
         {"lost_answers": 3, "completion_time": NOW}),
        # Certainly not created (429s/5xx exhausted, auth): tried again later, nothing counted.
        (CreateOutcome(CreateResult.NOT_CREATED, message="503"), {}, TaskPhase.CREATING,
         {"create_calls": None, "lost_answers": None}),
        (CreateOutcome(CreateResult.REFUSED, message="bad ids"), {}, TaskPhase.FAILED,
         {"message": "bad ids", "completion_time": NOW}),
        # A found-unanswered task that is then created keeps the ambiguity on record.
        (created(), {"lostAnswers": 1, "ambiguous": True, "createCalls": 1}, TaskPhase.SUBMITTED,
         {"ambiguous": True, "create_calls": 2}),
    ],
)  # fmt: skip
def test_after_create(
    outcome: CreateOutcome, before: dict[str, Any], phase: TaskPhase, checks: dict[str, Any]
) -> None:
    task = make_task(1, "Creating", [("a", 0, 2, 1)], **before)
    decision = after_create(task, outcome, NOW, POLICY, next_sequence=2)
    assert decision.status.phase is phase
    assert decision.follower is None
    for field, value in checks.items():
        assert getattr(decision.status, field) == value, field


def test_creates_that_make_no_task_wait_twice_as_long_each_time_up_to_the_max() -> None:
    task = make_task(1, "Creating", [("a", 0, 2, 1)])
    waits = []
    for _ in range(10):
        outcome = CreateOutcome(CreateResult.NOT_CREATED, message="not created: HTTP 503")
        task.status = after_create(task, outcome, NOW, POLICY, next_sequence=2).status
        assert task.status.next_attempt_at is not None
        waits.append((task.status.next_attempt_at - NOW).total_seconds())
        # What the worker does before sending again: the next attempt is no longer planned.
        task.status = task.status.model_copy(update={"next_attempt_at": None})
    assert waits[:4] == [30, 60, 120, 240]
    assert waits[-1] == 3600
    assert task.status.not_created == 10
    assert task.status.create_calls is None  # nothing was created, nothing may be duplicated


def test_409_naming_exactly_the_tasks_ids_adopts_the_running_task() -> None:
    task = make_task(1, "Creating", [("a", 0, 1, 1), ("b", 0, 1, 1)])
    outcome = CreateOutcome(
        CreateResult.CONFLICT,
        conflicts=((0, Range(0, 1)), (1, Range(0, 1))),
        conflicting_tasks=("mp-9",),
    )
    decision = after_create(task, outcome, NOW, POLICY, next_sequence=2)
    assert decision.status.phase is TaskPhase.SUBMITTED
    assert (decision.status.tracking_id, decision.status.adopted) == ("mp-9", True)
    assert decision.follower is None


def test_409_for_some_ids_splits_them_off_to_follow_and_requeues_the_rest() -> None:
    task = make_task(1, "Creating", [("b", 0, 2, 1), ("c", 0, 1, 1)])
    outcome = CreateOutcome(
        CreateResult.CONFLICT, conflicts=((0, Range(0, 1)),), conflicting_tasks=("mp-9",)
    )
    decision = after_create(task, outcome, NOW, POLICY, next_sequence=7)
    assert decision.status.phase is TaskPhase.SPLIT
    assert decision.follower is not None
    spec, status = decision.follower
    assert [(m.uid, m.start, m.end) for m in spec.members] == [("b", 0, 1)]
    assert (spec.sequence, spec.retry_of, spec.id_count) == (7, "t1", 1)
    assert (status.phase, status.tracking_id, status.adopted) == (TaskPhase.SUBMITTED, "mp-9", True)
    # What the requests then show: b's x follows mp-9, b's y and c's z wait to be sent again.
    follower = Task(name="t7", spec=spec, status=status)
    task.status = decision.status
    b = cover(2, [Slice(task, 0), Slice(follower, 0)], POLICY)
    assert (b.in_flight, b.done, [p.range for p in b.pending]) == (1, 0, [Range(1, 2)])
    assert b.pending[0].group is None  # packed again with anything
    c = cover(1, [Slice(task, 1)], POLICY)
    assert [p.range for p in c.pending] == [Range(0, 1)]


def test_409_naming_several_running_tasks_waits_for_them() -> None:
    task = make_task(1, "Creating", [("a", 0, 1, 1)])
    outcome = CreateOutcome(
        CreateResult.CONFLICT, conflicts=((0, Range(0, 1)),), conflicting_tasks=("m1", "m2")
    )
    decision = after_create(task, outcome, NOW, POLICY, next_sequence=2)
    assert decision.status.phase is TaskPhase.CREATING
    assert decision.status.next_attempt_at == NOW + timedelta(seconds=30)
    assert decision.status.tracking_id is None


def test_conflict_ranges_are_runs_of_named_ids() -> None:
    task = make_task(1, "Creating", [("a", 10, 15, 1), ("b", 0, 2, 1)])
    ids = [["a0", "a1", "a2", "a3", "a4"], ["b0", "b1"]]
    runs = conflict_ranges(task.spec.members, ids, {"a1", "a2", "a4", "b0"})
    assert runs == ((0, Range(11, 13)), (0, Range(14, 15)), (1, Range(0, 1)))


# ---------------------------------------------------------------------- after_poll


@pytest.mark.parametrize(
    ("before", "state", "phase"),
    [
        ("Submitted", TaskState.STAGING, TaskPhase.SUBMITTED),
        ("Submitted", TaskState.STARTED, TaskPhase.STARTED),
        ("Started", TaskState.SUCCESS, TaskPhase.SUCCEEDED),
        ("Submitted", TaskState.FAILURE, TaskPhase.FAILED),
        ("Submitted", TaskState.NOT_FOUND, TaskPhase.FAILED),
        ("Submitted", TaskState.REVOKED, TaskPhase.REVOKED),
        # UNKNOWN is a lookup error: no step back from Started.
        ("Started", TaskState.UNKNOWN, TaskPhase.STARTED),
        ("Submitted", TaskState.UNKNOWN, TaskPhase.SUBMITTED),
    ],
)
def test_after_poll(before: str, state: TaskState, phase: TaskPhase) -> None:
    task = make_task(1, before, [("a", 0, 1, 1)], trackingId="mp-1", mixpanelState="PENDING")
    status = after_poll(task, state, NOW)
    assert status is not None
    assert status.phase is phase
    assert status.checked_at == NOW
    assert (status.completion_time is not None) == phase.terminal


def test_unknown_says_so_while_it_lasts() -> None:
    task = make_task(1, "Submitted", [("a", 0, 1, 1)], trackingId="mp-1", mixpanelState="PENDING")
    unknown = after_poll(task, TaskState.UNKNOWN, NOW)
    assert unknown is not None
    assert unknown.message is not None
    assert "asked again" in unknown.message
    task.status = unknown
    known = after_poll(task, TaskState.STARTED, NOW)
    assert known is not None
    assert known.message is None


def test_an_unchanged_state_writes_nothing_until_checked_at_is_an_hour_old() -> None:
    task = make_task(1, "Submitted", [("a", 0, 1, 1)], mixpanelState="PENDING", checkedAt=NOW)
    assert after_poll(task, TaskState.PENDING, NOW + timedelta(minutes=59)) is None
    assert after_poll(task, TaskState.PENDING, NOW + timedelta(minutes=61)) is not None


def test_revoked_after_our_own_cancel_is_cancelled_not_revoked() -> None:
    task = make_task(1, "Submitted", [("a", 0, 1, 1)], trackingId="mp-1")
    status = after_poll(task, TaskState.REVOKED, NOW, ours_to_cancel=True)
    assert status is not None
    assert status.phase is TaskPhase.CANCELLED


# ---------------------------------------------------------------------- cancel


def test_cancel_rules() -> None:
    live = make_task(1, "Submitted", [("a", 0, 1, 1), ("b", 0, 1, 1)], mixpanelState="STAGING")
    assert needs_cancel(live, {"b"})
    assert not needs_cancel(live, {"z"})
    assert cancellable(live)
    started = make_task(2, "Started", [("a", 0, 1, 1)], mixpanelState="STARTED")
    assert not cancellable(started)
    retrieval = make_task(3, "Submitted", [("a", 0, 1, 1)], kind="Retrieval")
    assert not cancellable(retrieval)
    done = make_task(4, "Succeeded", [("a", 0, 1, 1)])
    assert not needs_cancel(done, {"a"})
    status = after_cancel(live, NOW)
    assert status.phase is TaskPhase.CANCELLED
    assert status.completion_time == NOW


# ---------------------------------------------------------------------- coverage and planning


def test_a_failed_packed_task_is_bisected_and_a_lone_one_retried_then_failed() -> None:
    members = [(u, 0, 1, 1) for u in "abcd"]
    failed = make_task(1, "Failed", members, message="Mixpanel reported FAILURE")
    groups = {
        u: cover(1, [Slice(failed, n)], POLICY).pending[0].group for n, u in enumerate("abcd")
    }
    assert groups["a"] == groups["b"] != groups["c"] == groups["d"]
    lone = make_task(2, "Failed", [("a", 0, 1, 1)])
    retry = cover(1, [Slice(lone, 0)], POLICY).pending[0]
    assert (retry.attempt, retry.group) == (2, "t2")
    last = make_task(3, "Failed", [("a", 0, 1, 3)], message="bad input")
    final = cover(1, [Slice(last, 0)], POLICY)
    assert (final.failed, final.pending, final.failure_message) == (1, [], "bad input")


def test_plan_packs_free_slices_and_keeps_groups_apart() -> None:
    waiting = [
        Waiting("a", PendingSlice(Range(0, 1)), ("x",)),
        Waiting("b", PendingSlice(Range(0, 1)), ("y",)),
        Waiting("c", PendingSlice(Range(0, 1), 1, "t1/0", "t1"), ("z",)),
        Waiting("d", PendingSlice(Range(0, 1), 1, "t1/1", "t1"), ("w",)),
    ]
    tasks = plan(waiting, 2000, deletion=True)
    assert sorted(t.planned.ids for t in tasks) == [["w"], ["x", "y"], ["z"]]
    assert {t.retry_of for t in tasks if t.planned.ids in (["z"], ["w"])} == {"t1"}
    retrievals = plan(waiting[:2], 2000, deletion=False)
    assert [t.planned.ids for t in retrievals] == [["x"], ["y"]]  # never mixed


def test_references_list_every_task_oldest_first_without_ids() -> None:
    first = make_task(1, "Cancelled", [("a", 0, 2, 1)], trackingId="mp-1")
    second = make_task(2, "Succeeded", [("a", 0, 2, 1)], trackingId="mp-2")
    c = cover(2, [Slice(second, 0), Slice(first, 0)], POLICY)
    assert [(r.name, r.phase, r.tracking_id) for r in c.references] == [
        ("t1", TaskPhase.CANCELLED, "mp-1"),
        ("t2", TaskPhase.SUCCEEDED, "mp-2"),
    ]
    assert c.done == 2


@pytest.mark.parametrize(
    ("phase", "ready", "reconciling", "stalled"),
    [
        ("Creating", "False", True, False),
        ("Submitted", "False", True, False),
        ("Started", "False", True, False),
        ("Succeeded", "True", False, False),
        ("Failed", "False", False, True),
        ("Lost", "False", False, True),
        ("Revoked", "False", False, True),
        ("Cancelled", "False", False, False),
        ("Split", "False", False, False),
    ],
)
def test_task_conditions_follow_kstatus(
    phase: str, ready: str, reconciling: bool, stalled: bool
) -> None:
    status = with_conditions(MixpanelTaskStatus.model_validate({"phase": phase}), NOW)
    by_type = {c.type: c for c in status.conditions or []}
    assert by_type["Ready"].status == ready
    assert by_type["Ready"].reason == phase
    assert ("Reconciling" in by_type) is reconciling
    assert ("Stalled" in by_type) is stalled
