"""Mixpanel misbehaving (issue 10): each sandbox fault mode against the real operator and a real
control plane.

Every test switches one misbehaviour on for one project (``POST /_sandbox/projects/{token}``
``{"faults": ...}``), once the project is Ready, and checks what a user relies on:

- the affected request or project shows, while it lasts or at its end, a condition (or the
  MixpanelTask's) that says what happened and what to do;
- retries are bounded and spaced: the sandbox's call log, counted over a window, holds no more
  calls than the operator's pace allows (``FAST_FLAGS``), far from a tight loop;
- a request in another project applied meanwhile finishes;
- the operator process stays up and its log holds no traceback.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.e2e.conftest import Scenario
from tests.e2e.operator_harness import FAST_FLAGS, Operator, Sandbox, wait_until

pytestmark = pytest.mark.e2e


def _flag(name: str) -> float:
    return float(FAST_FLAGS[FAST_FLAGS.index(name) + 1].removesuffix("s"))


#: The operator's pace in these tests (tests/e2e/operator_harness.py).
POLL_MAX = _flag("--poll-max")
RETRY_INTERVAL = _flag("--retry-interval")
#: A project's default request budget (spec.requestInterval): the most calls could ever go.
REQUEST_INTERVAL = 1.2
#: The sandbox of the e2e session runs its life cycle ten times faster (operator_harness).
TIME_SCALE = 0.1


class Watch:
    """The operator as one test saw it: its log from the test's start, and its process."""

    def __init__(self, operator: Operator) -> None:
        self.operator = operator
        self.offset = operator.log.stat().st_size if operator.log.exists() else 0

    def log(self) -> str:
        with open(self.operator.log, "rb") as f:
            f.seek(self.offset)
            return f.read().decode(errors="replace")

    def survived(self, *ids: str) -> None:
        """Still running; no traceback, no failed step and none of ``ids`` in its log."""
        proc = self.operator.proc
        assert proc is not None
        assert proc.poll() is None, f"operator exited:\n{self.operator.log_tail()}"
        log = self.log()
        assert "Traceback" not in log, log[log.index("Traceback") - 500 :][:4000]
        assert " step failed" not in log
        for distinct_id in ids:
            assert distinct_id not in log


def faults(sandbox: Sandbox, token: str, changes: dict[str, Any] | None) -> None:
    """Switch misbehaviours of one sandbox project (merged into its faults; None: none)."""
    sandbox.post(f"/projects/{token}", {"faults": changes})


def ready_project(scenario: Scenario, name: str) -> str:
    token = scenario.project(name)
    wait_until(
        lambda: (scenario.condition(name, "Ready", kind="mpp") or {}).get("status") == "True",
        what=f"project {name} Ready",
    )
    return token


def finished(
    scenario: Scenario, *names: str, phase: str = "Succeeded", timeout: float = 90
) -> None:
    wait_until(
        lambda: all(scenario.phase(n) == phase for n in names),
        timeout=timeout,
        what=f"{names} {phase}",
    )


def calls_in_window(sandbox: Sandbox, token: str, seconds: float, **filters: str) -> int:
    """How many GDPR API calls the project got in the next ``seconds``."""
    before = int(sandbox.calls(token, **filters)["count"])
    time.sleep(seconds)
    return int(sandbox.calls(token, **filters)["count"]) - before


def tasks_of(scenario: Scenario, request: str) -> list[dict[str, Any]]:
    refs = scenario.dsr(request).get("status", {}).get("tasks") or []
    return [scenario.kube.get("mpt", r["name"], scenario.namespace) for r in refs]


def condition_of(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for cond in obj.get("status", {}).get("conditions") or []:
        if cond["type"] == type_:
            found: dict[str, Any] = cond
            return found
    return None


def calm_request_finishes(scenario: Scenario, name: str = "calm") -> None:
    """Another project's request, applied while the misbehaviour lasts, finishes."""
    scenario.request(name, [f"{name}@example.com"], project="calm")
    finished(scenario, name)


def readable(scenario: Scenario, *names: str) -> str:
    """What a person reads of requests and their tasks: status, conditions, Events."""
    parts = []
    for name in names:
        parts.append(json.dumps(scenario.dsr(name).get("status", {})))
        parts.append(json.dumps(scenario.events(name)))
        for task in tasks_of(scenario, name):
            parts.append(json.dumps(task.get("status", {})))
            parts.append(json.dumps(scenario.events(task["metadata"]["name"])))
    return "\n".join(parts)


# --------------------------------------------------------------------------------- the modes


def test_unknown_states_are_asked_again_at_the_polling_pace(
    scenario: Scenario, operator: Operator
) -> None:
    watch = Watch(operator)
    sandbox = scenario.sandbox
    victim = ready_project(scenario, "victim")
    ready_project(scenario, "calm")
    faults(sandbox, victim, {"unknown_state_rate": 1.0, "unknown_states": ["QUEUED_FOR_REVIEW"]})
    scenario.request("odd", ["odd@example.com"], project="victim")

    def unknown() -> dict[str, Any] | None:
        found = [t for t in tasks_of(scenario, "odd") if t["status"].get("mixpanelState")]
        return found[0] if found and found[0]["status"]["mixpanelState"] == "UNKNOWN" else None

    task = wait_until(unknown, what="the task showing Mixpanel's UNKNOWN")
    reconciling = condition_of(task, "Reconciling")
    assert reconciling is not None
    assert "state" in reconciling["message"]
    assert "again" in reconciling["message"]
    calm_request_finishes(scenario)
    window = 12.0
    polls = calls_in_window(sandbox, victim, window, operation="deletion_status")
    print(f"\nfigure: unknown_state: {polls} status checks in {window:.0f}s")
    assert 1 <= polls <= window / (POLL_MAX * 0.9) + 1, polls
    assert scenario.phase("odd") == "Submitted"
    faults(sandbox, victim, None)
    finished(scenario, "odd")
    watch.survived("odd@example.com")


@pytest.mark.parametrize(
    ("mode", "changes", "tasks_made"),
    [
        ("empty_body", {"empty_body_rate": 1.0}, 6),
        ("html_error", {"html_error_rate": 1.0, "html_error_status": 502}, 0),
    ],
)
def test_unreadable_create_answers_end_lost_after_six_and_a_retry_finishes(
    scenario: Scenario, operator: Operator, mode: str, changes: dict[str, Any], tasks_made: int
) -> None:
    """A create answered with an empty body (carried out) or a proxy's HTML 502 (not carried
    out) may or may not have made a task: sent again alone, at most six times, then the
    request fails saying so; a person's retry sends it once Mixpanel behaves."""
    watch = Watch(operator)
    sandbox = scenario.sandbox
    victim = ready_project(scenario, "victim")
    ready_project(scenario, "calm")
    faults(sandbox, victim, changes)
    scenario.request("hollow", ["hollow@example.com"], project="victim")
    calm_request_finishes(scenario)
    finished(scenario, "hollow", phase="Failed", timeout=150)
    stalled = scenario.condition("hollow", "Stalled")
    assert stalled is not None
    assert stalled["reason"] == "TaskFailed"
    assert "never answered 6" in stalled["message"]
    assert "check Mixpanel" in stalled["message"]
    assert "kubectl dsr retry" in stalled["message"]
    duplicate = scenario.condition("hollow", "PossibleDuplicate")
    assert duplicate is not None
    assert duplicate["status"] == "True"
    [task] = tasks_of(scenario, "hollow")
    assert (task["status"]["phase"], task["status"]["lostAnswers"]) == ("Lost", 6)
    # Bounded: six creates in all, and none once it failed.
    assert sandbox.calls(victim, operation="create_deletion")["count"] == 6
    assert calls_in_window(sandbox, victim, 2 * RETRY_INTERVAL + 1) == 0
    made = sandbox.ids(victim).get("hollow@example.com", {}).get("deletion_tasks", 0)
    assert made == tasks_made
    assert "<html" not in readable(scenario, "hollow").lower()
    # Mixpanel behaves again; a person retries the failed ids.
    faults(sandbox, victim, None)
    scenario.kube.run(
        "annotate", "dsr", "hollow", "-n", scenario.namespace, "mixpaneldsr.io/retry=after-fix"
    )
    finished(scenario, "hollow", timeout=90)
    watch.survived("hollow@example.com")


def test_error_body_with_200_is_not_a_task_and_is_sent_again_spaced(
    scenario: Scenario, operator: Operator
) -> None:
    watch = Watch(operator)
    sandbox = scenario.sandbox
    victim = ready_project(scenario, "victim")
    ready_project(scenario, "calm")
    faults(sandbox, victim, {"error_body_rate": 1.0})
    scenario.request("refused", ["refused@example.com"], project="victim")
    wait_until(
        lambda: sandbox.calls(victim, operation="create_deletion")["count"] >= 1,
        what="a create answered with an error body",
    )
    calm_request_finishes(scenario)
    window = 15.0
    creates = calls_in_window(sandbox, victim, window)
    print(f"\nfigure: error_body on creates: {creates} calls in {window:.0f}s")
    # Never faster than the project's budget, and nothing was created.
    assert 1 <= creates <= window / REQUEST_INTERVAL + 1, creates
    assert sandbox.tasks(victim) == []
    [task] = tasks_of(scenario, "refused")
    assert task["status"].get("phase", "Creating") == "Creating"
    assert "not created" in (task["status"].get("message") or "")
    faults(sandbox, victim, None)
    finished(scenario, "refused")
    assert sandbox.ids(victim)["refused@example.com"]["deletion_tasks"] == 1
    assert scenario.condition("refused", "PossibleDuplicate") is None
    watch.survived("refused@example.com")


@pytest.mark.parametrize("not_found_status", [200, 404])
def test_vanishing_tasks_are_sent_again_then_the_request_fails_with_the_reason(
    scenario: Scenario, operator: Operator, not_found_status: int
) -> None:
    """Tracking ids that later read NOT_FOUND, said in a 200 body or (the sandbox's other
    reading of the fact sheet) as HTTP 404."""
    watch = Watch(operator)
    sandbox = scenario.sandbox
    victim = ready_project(scenario, "victim")
    ready_project(scenario, "calm")
    sandbox.post("/settings", {"responses": {"not_found_status": not_found_status}})
    try:
        faults(sandbox, victim, {"vanish_rate": 1.0, "vanish_after_seconds": 0.2})
        scenario.request("ghost", ["ghost@example.com"], project="victim")
        calm_request_finishes(scenario)
        finished(scenario, "ghost", phase="Failed", timeout=120)
        quiet = calls_in_window(sandbox, victim, 2 * POLL_MAX)
    finally:
        sandbox.post("/settings", {"responses": {"not_found_status": 200}})
    stalled = scenario.condition("ghost", "Stalled")
    assert stalled is not None
    assert stalled["reason"] == "TaskFailed"
    assert "NOT_FOUND" in stalled["message"]
    status = scenario.dsr("ghost")["status"]
    assert [(t["attempt"], t["phase"]) for t in status["tasks"]] == [
        (1, "Failed"), (2, "Failed"), (3, "Failed"),
    ]  # fmt: skip
    # Bounded: three tasks (--max-attempts), then nothing more.
    assert sandbox.calls(victim, operation="create_deletion")["count"] == 3
    assert quiet == 0
    polls = sandbox.calls(victim, operation="deletion_status")["by_status"]
    assert polls.get(str(not_found_status), 0) >= 3
    assert sandbox.ids(victim)["ghost@example.com"]["deletions_succeeded"] == 0
    watch.survived("ghost@example.com")


def test_a_project_that_suddenly_answers_403_is_not_ready_until_it_stops(
    scenario: Scenario, operator: Operator
) -> None:
    watch = Watch(operator)
    sandbox = scenario.sandbox
    victim = ready_project(scenario, "victim")
    ready_project(scenario, "calm")
    scenario.request("before", ["before@example.com"], project="victim")
    finished(scenario, "before")
    faults(sandbox, victim, {"forbidden": True})
    scenario.request("during", ["during@example.com"], project="victim")
    stalled = wait_until(lambda: scenario.condition("during", "Stalled"), what="during Stalled")
    assert stalled["reason"] == "ProjectNotReady"
    assert "403" in stalled["message"]
    assert "update the Secret" in stalled["message"]
    ready = scenario.condition("victim", "Ready", kind="mpp")
    assert ready is not None
    assert (ready["status"], ready["reason"]) == ("False", "TokenExpired")
    calm_request_finishes(scenario)
    window = 5 * RETRY_INTERVAL
    checks = calls_in_window(sandbox, victim, window)
    print(f"\nfigure: forbidden: {checks} calls in {window:.0f}s")
    # One token check per --retry-interval while it lasts, nothing else.
    assert 1 <= checks <= window / RETRY_INTERVAL + 1, checks
    assert sandbox.calls(victim, operation="create_deletion")["by_status"].get("403", 0) <= 1
    faults(sandbox, victim, None)
    finished(scenario, "during")
    assert scenario.condition("during", "Stalled") is None
    watch.survived("before@example.com", "during@example.com")


def test_a_task_stuck_started_for_thirty_days_is_polled_at_the_slowest_pace_and_finishes(
    scenario: Scenario, operator: Operator
) -> None:
    watch = Watch(operator)
    sandbox = scenario.sandbox
    victim = ready_project(scenario, "victim")
    ready_project(scenario, "calm")
    faults(sandbox, victim, {"stuck_started_rate": 1.0, "stuck_started_days": 30})
    received = (datetime.now(UTC) - timedelta(days=32)).strftime("%Y-%m-%dT%H:%M:%SZ")
    scenario.request("slow", ["slow@example.com"], project="victim", receivedAt=received)
    wait_until(lambda: scenario.phase("slow") == "InProgress", what="slow InProgress")
    calm_request_finishes(scenario)
    risk = scenario.condition("slow", "DeadlineAtRisk")
    assert risk is not None
    assert (risk["status"], risk["reason"]) == ("True", "DeadlinePassed")
    [task] = tasks_of(scenario, "slow")
    assert task["status"]["mixpanelState"] == "STARTED"
    window = 12.0
    polls = calls_in_window(sandbox, victim, window)
    print(f"\nfigure: stuck_started: {polls} status checks in {window:.0f}s")
    assert 1 <= polls <= window / (POLL_MAX * 0.9) + 1, polls
    # Thirty days later (scaled as the sandbox's life cycle), Mixpanel finishes the task.
    sandbox.post("/clock", {"advance_seconds": 30 * 86400 * TIME_SCALE + 60})
    finished(scenario, "slow")
    watch.survived("slow@example.com")


@pytest.mark.parametrize(
    "changes",
    [
        {"html_error_rate": 1.0},
        {"error_body_rate": 1.0},
        {"empty_body_rate": 1.0},
        {"timeout_rate": 1.0, "timeout_seconds": 45.0},
    ],
    ids=["html_error", "error_body", "empty_body", "timeout"],
)
def test_unreadable_status_answers_are_retried_within_the_budget_and_change_nothing(
    scenario: Scenario, operator: Operator, changes: dict[str, Any]
) -> None:
    """Status checks of a live task answered with a proxy's page, an error body, nothing, or
    not within the client's timeout: the task keeps what Mixpanel last said (neither failed nor
    done), checks stay within the project's budget, and it finishes once the answers are
    readable again."""
    watch = Watch(operator)
    sandbox = scenario.sandbox
    victim = ready_project(scenario, "victim")
    ready_project(scenario, "calm")
    faults(sandbox, victim, {"stuck_started_rate": 1.0})
    scenario.request("blind", ["blind@example.com"], project="victim")
    wait_until(
        lambda: [t for t in tasks_of(scenario, "blind") if t["status"].get("phase") == "Started"],
        what="the task Started",
    )
    faults(sandbox, victim, changes)
    calm_request_finishes(scenario)
    # A held answer takes the client's whole 30 s timeout: a window for a few of them.
    window = 75.0 if "timeout_rate" in changes else 15.0
    checks = calls_in_window(sandbox, victim, window, operation="deletion_status")
    print(f"\nfigure: {next(iter(changes))} on status checks: {checks} calls in {window:.0f}s")
    assert 1 <= checks <= window / REQUEST_INTERVAL + 1, checks
    [task] = tasks_of(scenario, "blind")
    assert (task["status"]["phase"], task["status"]["mixpanelState"]) == ("Started", "STARTED")
    assert scenario.phase("blind") == "InProgress"
    faults(sandbox, victim, None)
    sandbox.post("/clock", {"advance_seconds": 30 * 86400 * TIME_SCALE + 60})
    finished(scenario, "blind")
    watch.survived("blind@example.com")


def _first_create_held(sandbox: Sandbox, token: str) -> None:
    wait_until(
        lambda: sandbox.tasks(token) and sandbox.calls(token, operation="create_deletion")["count"],
        what="a create carried out and its answer held",
    )


@pytest.mark.parametrize("conflict_on_resend", [False, True])
def test_a_create_answered_after_the_timeout_is_sent_again_and_said_so(
    scenario: Scenario, operator: Operator, conflict_on_resend: bool
) -> None:
    """The sandbox does the create and holds its answer past the client's 30 s timeout. Sent
    again: a duplicate, flagged PossibleDuplicate; or, where Mixpanel refuses the resend with
    409 naming the first task, that task is followed and nothing is duplicated."""
    watch = Watch(operator)
    sandbox = scenario.sandbox
    victim = ready_project(scenario, "victim")
    ready_project(scenario, "calm")
    changes: dict[str, Any] = {"timeout_rate": 1.0, "timeout_seconds": 45.0}
    if conflict_on_resend:
        changes["conflict_on_resend"] = True
    faults(sandbox, victim, changes)
    scenario.request("late", ["late@example.com"], project="victim")
    _first_create_held(sandbox, victim)
    faults(sandbox, victim, {"timeout_rate": 0.0})  # the next answers come in time
    calm_request_finishes(scenario)
    finished(scenario, "late", timeout=120)
    duplicate = scenario.condition("late", "PossibleDuplicate")
    assert duplicate is not None
    assert duplicate["status"] == "True"
    assert "answer was lost" in duplicate["message"]
    creates = sandbox.calls(victim, operation="create_deletion")
    assert creates["count"] == 2
    [task] = tasks_of(scenario, "late")
    assert task["status"]["lostAnswers"] == 1
    entry = sandbox.ids(victim)["late@example.com"]
    if conflict_on_resend:
        assert creates["by_status"] == {"200": 1, "409": 1}
        assert task["status"]["adopted"] is True
        assert entry["deletion_tasks"] == 1
    else:
        assert creates["by_status"] == {"200": 2}
        assert entry["deletion_tasks"] == 2
    watch.survived("late@example.com")
