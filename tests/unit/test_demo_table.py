"""The demo's table and progress lines, from DataSubjectRequests as kubectl returns them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from mixpanel_dsr.api.models import Phase
from mixpanel_dsr.demo import all_finished, progress_line, render_table, row_of

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def _dsr(name: str, status: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    item: dict[str, Any] = {"metadata": {"namespace": "privacy", "name": name}, "spec": spec}
    if status is not None:
        item["status"] = status
    return item


def test_a_request_without_status_is_pending_with_nothing_known() -> None:
    row = row_of(_dsr("a"))
    assert (row.phase, row.done, row.total, row.tasks, row.deadline) == (
        Phase.PENDING, None, None, "-", None,
    )  # fmt: skip
    assert progress_line(row, NOW) == "12:00:00 privacy/a Pending done=- tasks=- deadline=-"


def test_tasks_are_counted_by_phase_and_the_deadline_shows_its_date_and_distance() -> None:
    row = row_of(
        _dsr(
            "a",
            {
                "phase": "InProgress", "idsDone": 2, "idsTotal": 5,
                "deadline": "2026-12-28T09:00:00Z",
                "tasks": [{"phase": "Started"}, {"phase": "Succeeded"}, {"phase": "Started"}],
            },
        )
    )  # fmt: skip
    table = render_table([row], NOW).splitlines()
    assert table[0].split() == ["REQUEST", "PHASE", "DONE", "TASKS", "DEADLINE"]
    assert table[1].split() == [
        "privacy/a", "InProgress", "2/5", "3:", "2", "Started,", "1", "Succeeded",
        "2026-12-28", "(in", "27d)",
    ]  # fmt: skip


def test_an_overdue_deadline_says_so() -> None:
    row = row_of(_dsr("a", {"phase": "Queued", "deadline": "2026-11-01T00:00:00Z"}))
    assert "deadline=2026-11-01 (overdue)" in progress_line(row, NOW)


def test_finished_means_every_request_that_is_sent_finished_dry_runs_aside() -> None:
    done = row_of(_dsr("a", {"phase": "Succeeded"}))
    failed = row_of(_dsr("b", {"phase": "Failed"}))
    running = row_of(_dsr("c", {"phase": "Submitted"}))
    plan = row_of(_dsr("d", {"phase": "Pending", "plannedTasks": 1}, dryRun=True))
    assert plan.tasks == "dry run: 1 planned"
    assert all_finished([done, failed, plan])
    assert not all_finished([done, running, plan])
    assert not all_finished([plan])
    assert not all_finished([])
