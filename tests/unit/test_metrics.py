"""The task-duration histogram: what a finished Mixpanel task adds, and what adds nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import REGISTRY

from mixpanel_dsr import metrics
from mixpanel_dsr.api.models import TaskPhase
from mixpanel_dsr.mixpanel.types import Region

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def _sample(suffix: str, labels: dict[str, str]) -> float:
    value = REGISTRY.get_sample_value(f"mixpanel_dsr_task_duration_seconds{suffix}", labels)
    return value or 0.0


def test_a_finished_task_is_observed_under_its_type_region_and_phase() -> None:
    labels = {"type": "deletion", "region": "EU", "outcome": "succeeded"}
    count, total = _sample("_count", labels), _sample("_sum", labels)
    in_two_days = _sample("_bucket", {**labels, "le": "172800.0"})
    under_a_day = _sample("_bucket", {**labels, "le": "86400.0"})
    metrics.observe_task_duration(
        deletion=True, region=Region.EU, phase=TaskPhase.SUCCEEDED,
        submitted_at=T0, completion_time=T0 + timedelta(hours=30),
    )  # fmt: skip
    assert _sample("_count", labels) == count + 1
    assert _sample("_sum", labels) == pytest.approx(total + 30 * 3600)
    assert _sample("_bucket", {**labels, "le": "172800.0"}) == in_two_days + 1
    assert _sample("_bucket", {**labels, "le": "86400.0"}) == under_a_day


@pytest.mark.parametrize(
    ("phase", "submitted", "completed"),
    [
        (TaskPhase.STARTED, T0, T0 + timedelta(hours=1)),  # not finished
        (TaskPhase.FAILED, None, T0),  # Mixpanel never accepted it
        (TaskPhase.SUCCEEDED, T0, None),
    ],
    ids=["unfinished", "never-accepted", "no-completion-time"],
)
def test_nothing_is_observed_without_both_ends(
    phase: TaskPhase, submitted: datetime | None, completed: datetime | None
) -> None:
    labels = {"type": "retrieval", "region": "IN", "outcome": phase.value.lower()}
    before = _sample("_count", labels)
    metrics.observe_task_duration(
        deletion=False, region=Region.IN, phase=phase,
        submitted_at=submitted, completion_time=completed,
    )  # fmt: skip
    assert _sample("_count", labels) == before
