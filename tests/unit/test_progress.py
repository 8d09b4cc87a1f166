"""Status mapping: the tasks covering a request -> phase, counts and conditions (kstatus/Argo CD
shaped)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mixpanel_dsr.api.models import ConditionStatus, Phase
from mixpanel_dsr.conditions import get_condition
from mixpanel_dsr.deadlines import add_months, deadline
from mixpanel_dsr.ledger import Policy, Slice, cover
from mixpanel_dsr.mixpanel.types import ComplianceType
from mixpanel_dsr.planning import Range
from mixpanel_dsr.progress import Blocker, compose_status
from tests.unit.test_ledger import make_task

NOW = datetime(2026, 11, 29, 12, tzinfo=UTC)
_seq = iter(range(1, 10_000))


def rec(start: int, end: int, phase: str, attempt: int = 1, **kw: object) -> Slice:
    """This request's slice [start, end) in a one-member task of the given phase."""
    task = make_task(next(_seq), phase, [("me", start, end, attempt)], **kw)
    return Slice(task, 0)


def status(total: int, records: list[Slice], **kw: object):  # type: ignore[no-untyped-def]
    args: dict[str, object] = {
        "generation": 3,
        "coverage": cover(total, records, Policy(max_attempts=3)),
        "dry_run": False,
        "deadline": NOW + timedelta(days=20),
        "now": NOW,
        "at_risk_margin": timedelta(days=7),
    }
    args.update(kw)
    return compose_status(None, **args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("records", "phase"),
    [
        ([], Phase.QUEUED),
        ([rec(0, 4, "Creating")], Phase.SUBMITTED),
        ([rec(0, 2, "Submitted")], Phase.SUBMITTED),  # half queued, half submitted
        ([rec(0, 4, "Started")], Phase.IN_PROGRESS),
        ([rec(0, 2, "Succeeded"), rec(2, 4, "Submitted")], Phase.IN_PROGRESS),
        ([rec(0, 4, "Succeeded")], Phase.SUCCEEDED),
        ([rec(0, 4, "Failed", 3)], Phase.FAILED),
        ([rec(0, 4, "Failed", 1)], Phase.QUEUED),  # retried
        ([rec(0, 4, "Revoked")], Phase.CANCELLED),
        ([rec(0, 4, "Cancelled")], Phase.QUEUED),  # the operator cancelled it: sent again
        ([rec(0, 4, "Split")], Phase.QUEUED),
        ([rec(0, 4, "Lost", ambiguous=True)], Phase.FAILED),
        ([rec(0, 4, "Failed", 1), rec(0, 4, "Succeeded", 2)], Phase.SUCCEEDED),
    ],
)
def test_phase_follows_the_tasks(records: list[Slice], phase: Phase) -> None:
    assert status(4, records).phase is phase


def test_ready_only_when_every_id_succeeded() -> None:
    partial = status(4, [rec(0, 3, "Succeeded"), rec(3, 4, "Started")])
    ready = get_condition(partial.conditions, "Ready")
    assert ready is not None
    assert ready.status is ConditionStatus.FALSE
    assert partial.progress == "3/4"
    assert get_condition(partial.conditions, "Reconciling") is not None
    assert get_condition(partial.conditions, "Stalled") is None
    done = status(4, [rec(0, 4, "Succeeded")])
    ready = get_condition(done.conditions, "Ready")
    assert ready is not None
    assert ready.status is ConditionStatus.TRUE
    assert ready.observed_generation == 3
    assert done.observed_generation == 3
    assert done.completion_time == NOW
    assert get_condition(done.conditions, "Reconciling") is None


def test_failure_beyond_retries_stalls_with_the_reason() -> None:
    failed = status(2, [rec(0, 2, "Failed", 3, message="Mixpanel: check the input")])
    assert failed.phase is Phase.FAILED
    assert failed.ids_failed == 2
    stalled = get_condition(failed.conditions, "Stalled")
    assert stalled is not None
    assert stalled.reason == "TaskFailed"
    assert "check the input" in stalled.message


def test_a_blocker_stalls_without_losing_progress() -> None:
    blocked = status(2, [], blocker=Blocker("ProjectNotFound", "MixpanelProject web not found"))
    assert blocked.phase is Phase.PENDING
    stalled = get_condition(blocked.conditions, "Stalled")
    assert stalled is not None
    assert stalled.reason == "ProjectNotFound"
    assert get_condition(blocked.conditions, "Reconciling") is None
    waiting = status(2, [], blocker=Blocker("WaitingForRetrievalSlot", "2 ahead", transient=True))
    assert get_condition(waiting.conditions, "Stalled") is None
    assert get_condition(waiting.conditions, "Reconciling") is not None


def test_retry_attempts_and_requeues_are_tracked() -> None:
    slices = [rec(0, 2, "Failed", 1), rec(2, 4, "Cancelled", 2), rec(4, 6, "Succeeded")]
    t = cover(6, slices, Policy(max_attempts=3))
    assert [(p.range, p.attempt) for p in t.pending] == [(Range(0, 2), 2), (Range(2, 4), 2)]
    # A lone failed slice is retried alone; a cancelled one may be packed again.
    assert t.pending[0].group is not None
    assert t.pending[1].group is None
    assert t.done == 2


def test_newer_tasks_override_older_ones_for_part_of_a_range() -> None:
    slices = [rec(0, 4, "Failed", 1), rec(0, 1, "Submitted", 2), rec(1, 4, "Submitted", 2)]
    t = cover(4, slices, Policy(max_attempts=3))
    assert t.in_flight == 4
    assert t.pending == []


def test_deadline_conditions() -> None:
    soon = status(1, [], deadline=NOW + timedelta(days=2))
    risk = get_condition(soon.conditions, "DeadlineAtRisk")
    assert risk is not None
    assert (risk.status, risk.reason) == (ConditionStatus.TRUE, "DeadlineNear")
    late = status(1, [], deadline=NOW - timedelta(hours=1))
    risk = get_condition(late.conditions, "DeadlineAtRisk")
    assert risk is not None
    assert risk.reason == "DeadlinePassed"
    fine = status(1, [])
    risk = get_condition(fine.conditions, "DeadlineAtRisk")
    assert risk is not None
    assert risk.status is ConditionStatus.FALSE


def test_transition_time_moves_only_on_change() -> None:
    first = status(2, [rec(0, 2, "Submitted")])
    later = compose_status(
        first,
        generation=3,
        coverage=cover(2, [rec(0, 2, "Started")], Policy()),
        dry_run=False,
        deadline=None,
        now=NOW + timedelta(hours=1),
        at_risk_margin=timedelta(days=7),
    )
    before = get_condition(first.conditions, "Ready")
    after = get_condition(later.conditions, "Ready")
    assert before is not None
    assert after is not None
    assert after.last_transition_time == before.last_transition_time
    assert after.reason == "InProgress"


def test_possible_duplicate_is_shown() -> None:
    s = status(2, [rec(0, 2, "Submitted", ambiguous=True)])
    dup = get_condition(s.conditions, "PossibleDuplicate")
    assert dup is not None
    assert dup.reason == "CreateOutcomeLost"


@pytest.mark.parametrize(
    ("compliance", "received", "due"),
    [
        (ComplianceType.GDPR, datetime(2026, 1, 31, tzinfo=UTC), datetime(2026, 2, 28, tzinfo=UTC)),
        (
            ComplianceType.GDPR,
            datetime(2026, 12, 15, tzinfo=UTC),
            datetime(2027, 1, 15, tzinfo=UTC),
        ),
        (ComplianceType.CCPA, datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 15, tzinfo=UTC)),
    ],
)
def test_statutory_deadlines(compliance: ComplianceType, received: datetime, due: datetime) -> None:
    assert deadline(compliance, received) == due


def test_add_months_leap_year() -> None:
    assert add_months(datetime(2028, 1, 31, tzinfo=UTC), 1).day == 29


def test_a_task_revoked_outside_the_operator_stalls_the_request() -> None:
    s = status(2, [rec(0, 2, "Revoked")])
    assert s.phase is Phase.CANCELLED
    stalled = get_condition(s.conditions, "Stalled")
    assert stalled is not None
    assert stalled.reason == "Cancelled"
    assert get_condition(s.conditions, "Reconciling") is None
