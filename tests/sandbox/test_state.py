"""Pure unit tests of the sandbox's state, life cycle, limits and helpers (no HTTP, fake clock)."""

from __future__ import annotations

import io
import json
import random
import zipfile
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from mixpanel_dsr.mixpanel.types import Region, TaskState
from mixpanel_dsr.sandbox import export
from mixpanel_dsr.sandbox.__main__ import build_parser, config_from_args
from mixpanel_dsr.sandbox.config import SandboxConfig, default_config, dump_config, load_config
from mixpanel_dsr.sandbox.faults import FaultInjector, FaultKind
from mixpanel_dsr.sandbox.state import Project, SandboxError, SandboxState, TaskKind
from mixpanel_dsr.sandbox.zipcrypto import build_zip
from tests.sandbox_fixtures import PROJECTS, FakeClock, fast_config

REPO = Path(__file__).resolve().parents[2]


def _state(clock: FakeClock, **sections: Any) -> SandboxState:
    sections.setdefault("rate_limit_per_s", 0)
    return SandboxState(fast_config(state_seconds=10, **sections), clock=clock)


def _admit(state: SandboxState, region: Region = Region.US) -> tuple[Project, Any]:
    token, oauth, _ = PROJECTS[region]
    return state.admit(region, token, f"Bearer {oauth}")


def _create(state: SandboxState, kind: TaskKind = TaskKind.DELETION, **body: Any) -> str:
    project, oauth = _admit(state)
    body.setdefault("distinct_ids", ["a"])
    return state.create(project, oauth, kind, body).tracking_id


# --- life cycle ---------------------------------------------------------------------------------


def test_life_cycle_boundaries() -> None:
    """'PENDING (accepted), STAGING (still cancellable), STARTED (no longer cancellable),
    SUCCESS'."""
    clock = FakeClock()
    state = _state(clock)
    task = state.tasks[_create(state)]
    expected = [
        (0, "PENDING"),
        (9.99, "PENDING"),
        (10, "STAGING"),
        (19.99, "STAGING"),
        (20, "STARTED"),
        (29.99, "STARTED"),
        (30, "SUCCESS"),
        (10**6, "SUCCESS"),
    ]
    for offset, name in expected:
        assert task.state_at(clock.now + offset) is TaskState(name), offset
    assert task.finished_at(clock.now + 40) == clock.now + 30


def test_time_scale_multiplies_durations() -> None:
    """Benchmarks: 'a global time_scale multiplier' (durations x time_scale)."""
    clock = FakeClock()
    state = _state(clock, lifecycle={"time_scale": 0.01})
    task = state.tasks[_create(state)]
    assert task.state_at(clock.now + 0.05) is TaskState.PENDING
    assert task.state_at(clock.now + 0.15) is TaskState.STAGING
    assert task.state_at(clock.now + 0.35) is TaskState.SUCCESS


def test_failure_rate_is_seeded() -> None:
    """'FAILURE ("check the input and create a new task")': drawn at creation from a seeded RNG."""

    def outcomes(seed: int) -> list[TaskState]:
        clock = FakeClock()
        state = _state(clock, lifecycle={"failure_rate": 0.5, "seed": seed})
        ids = [_create(state) for _ in range(20)]
        return [state.tasks[i].state_at(clock.now + 100) for i in ids]

    assert outcomes(1) == outcomes(1)
    assert set(outcomes(1)) == {TaskState.SUCCESS, TaskState.FAILURE}
    assert outcomes(1) != outcomes(2)


def test_cancel_rules() -> None:
    """'cancel deletion ... -> 204; 405 when no longer cancellable'; 'REVOKED (cancelled)'."""
    clock = FakeClock()
    state = _state(clock)
    project, _ = _admit(state)
    pending, staging, started = (_create(state) for _ in range(3))
    state.tasks[staging].created_at -= 15
    state.tasks[started].created_at -= 25
    assert state.cancel(project, pending) == 204
    assert state.cancel(project, staging) == 204
    with pytest.raises(SandboxError) as err:
        state.cancel(project, started)
    assert err.value.status == 405
    clock.advance(100)
    assert state.tasks[pending].state_at(clock.now) is TaskState.REVOKED
    assert state.tasks[pending].finished_at(clock.now) == clock.now - 100
    assert state.cancel(project, pending) == 204
    with pytest.raises(SandboxError) as err:
        state.cancel(project, "nope")
    assert err.value.status == 404


def test_force_state_hold_and_resume() -> None:
    """Admin 'force a state': held forever, or the life cycle resumes from that state."""
    clock = FakeClock()
    state = _state(clock)
    tracking_id = _create(state)
    state.force_state(tracking_id, TaskState.STAGING)
    clock.advance(1000)
    assert state.tasks[tracking_id].state_at(clock.now) is TaskState.STAGING
    state.force_state(tracking_id, TaskState.STAGING, hold=False)
    assert state.tasks[tracking_id].state_at(clock.now + 9.9) is TaskState.STAGING
    assert state.tasks[tracking_id].state_at(clock.now + 10) is TaskState.STARTED
    state.force_state(tracking_id, TaskState.FAILURE, hold=False)
    assert state.tasks[tracking_id].state_at(clock.now) is TaskState.FAILURE


def test_status_payload_and_unknown_injection() -> None:
    """'Status: {"status":"ok","results":{"status":"PENDING","result":"","distinct_ids":["1"]}}';
    'UNKNOWN (error while looking it up: transient)'."""
    clock = FakeClock()
    state = _state(clock)
    project, _ = _admit(state)
    tracking_id = _create(state, kind=TaskKind.RETRIEVAL, distinct_ids=["1"])
    code, body = state.status(project, TaskKind.RETRIEVAL, tracking_id, "http://x")
    assert (code, body) == (
        200,
        {"status": "ok", "results": {"status": "PENDING", "result": "", "distinct_ids": ["1"]}},
    )
    clock.advance(30)
    _, body = state.status(project, TaskKind.RETRIEVAL, tracking_id, "http://x")
    assert body["results"]["result"].startswith(f"http://x/_sandbox/exports/{tracking_id}?expires=")
    state.config.lifecycle.unknown_rate = 1.0
    _, body = state.status(project, TaskKind.RETRIEVAL, tracking_id, "http://x")
    assert body["results"]["status"] == "UNKNOWN"


# --- admission and limits -----------------------------------------------------------------------


def test_admission_order_and_statuses() -> None:
    """'errors {"status": "error", "error": "<text>"} (401, 403)': 401 without a Bearer, 403 for an
    unknown project, a wrong region, a wrong or expired token."""
    clock = FakeClock()
    state = _state(clock)
    token, oauth, _ = PROJECTS[Region.US]
    cases = [
        ((Region.US, token, None), 401),
        ((Region.US, token, "Token x"), 401),
        ((Region.US, None, f"Bearer {oauth}"), 400),
        ((Region.US, "nope", f"Bearer {oauth}"), 403),
        ((Region.EU, token, f"Bearer {oauth}"), 403),
        ((Region.US, token, "Bearer wrong"), 403),
    ]
    for args, status in cases:
        with pytest.raises(SandboxError) as err:
            state.admit(*args)
        assert err.value.status == status, args
        assert err.value.body()["status"] == "error"
    state.projects[token].config.oauth_tokens[0].expires_at = datetime(2020, 1, 1)
    with pytest.raises(SandboxError, match="expired"):
        state.admit(Region.US, token, f"Bearer {oauth}")


def test_rate_limit_uses_the_clock() -> None:
    """'1 request per second for the GDPR APIs; over it -> HTTP 429' (per project, every call)."""
    clock = FakeClock()
    state = _state(clock, rate_limit_per_s=2.0)
    _admit(state)
    clock.advance(0.25)
    with pytest.raises(SandboxError) as err:
        _admit(state)
    assert err.value.status == 429
    _admit(state, Region.EU)  # other project, own budget
    clock.advance(0.25)
    _admit(state)  # 0.5 s after the last accepted one
    with pytest.raises(SandboxError):
        _admit(state)


def test_scan_budget_arithmetic() -> None:
    """'at most ~5 years of outstanding retrieval scans per project': outstanding + new > budget is
    refused; terminal retrievals free their days."""
    clock = FakeClock()
    state = _state(clock, limits={"scan_budget_days": 1000})
    project = state.projects[PROJECTS[Region.US][0]]
    project.config.history_days = 400
    first = _create(state, TaskKind.RETRIEVAL)
    _create(state, TaskKind.RETRIEVAL)
    assert state.outstanding_scan_days(project) == 800
    with pytest.raises(SandboxError) as err:
        _create(state, TaskKind.RETRIEVAL)
    assert err.value.status == 429
    state.force_state(first, TaskState.FAILURE)
    assert state.outstanding_scan_days(project) == 400
    _create(state, TaskKind.RETRIEVAL)


def test_conflicts_only_with_running_deletions() -> None:
    """'409 for distinct ids that already have a running deletion ... rejecting the whole
    request'."""
    clock = FakeClock()
    state = _state(clock, limits={"conflict_409": True})
    first = _create(state, distinct_ids=["a", "b"])
    with pytest.raises(SandboxError) as err:
        _create(state, distinct_ids=["z", "a"])
    assert err.value.status == 409
    assert err.value.error == {"conflicting_distinct_ids": ["a"], "conflicting_task_ids": [first]}
    assert len(state.tasks) == 1
    _create(state, TaskKind.RETRIEVAL, distinct_ids=["a"])  # retrievals never conflict
    state.force_state(first, TaskState.REVOKED)
    _create(state, distinct_ids=["a"])


def test_conflict_409_per_project_override() -> None:
    """A project's ``conflict_409`` beats ``limits.conflict_409`` both ways; ``None`` follows it.
    Only PENDING, STAGING and STARTED deletions are running: a task held in UNKNOWN or NOT_FOUND
    is not, one held in STARTED is."""
    clock = FakeClock()
    state = _state(clock, limits={"conflict_409": True})
    us = state.projects[PROJECTS[Region.US][0]]
    configured = us.config
    state.update_project(us.token, {"conflict_409": False})
    assert not state.conflict_409(state.projects[us.token])
    first = _create(state, distinct_ids=["a"])
    second = _create(state, distinct_ids=["a"])  # the project's switch is off
    state.config = fast_config(state_seconds=10, rate_limit_per_s=0)  # global off
    updated = state.update_project(us.token, {"conflict_409": True})
    assert updated.project_id == us.project_id
    assert state.project_view(updated)["conflict_409"] is True
    with pytest.raises(SandboxError) as err:
        _create(state, distinct_ids=["b", "a"])
    assert err.value.status == 409
    assert err.value.error == {
        "conflicting_distinct_ids": ["a"],
        "conflicting_task_ids": [first, second],
    }
    for tracking_id in list(state.tasks):
        state.force_state(tracking_id, TaskState.UNKNOWN)
    state.force_state(first, TaskState.NOT_FOUND)
    held = _create(state, distinct_ids=["a"])
    state.force_state(held, TaskState.STARTED)
    clock.advance(1000)
    with pytest.raises(SandboxError) as err:
        _create(state, distinct_ids=["a"])
    assert err.value.error == {"conflicting_distinct_ids": ["a"], "conflicting_task_ids": [held]}
    with pytest.raises(SandboxError, match="token cannot change"):
        state.update_project(us.token, {"token": "other"})
    with pytest.raises(KeyError):
        state.update_project("nope", {"conflict_409": True})
    assert configured.conflict_409 is None  # the configured project is untouched
    state.reset()
    assert state.projects[us.token].config.conflict_409 is None


def test_validation_messages() -> None:
    """'distinct_ids: array of strings. Limit 2000 per request'; 'disclosure_type (retrievals, CCPA
    only)'."""
    state = _state(FakeClock())
    bad: list[tuple[TaskKind, dict[str, Any], str]] = [
        (TaskKind.DELETION, {"distinct_ids": ["a"] * 2001}, "too many distinct_ids"),
        (TaskKind.DELETION, {"distinct_ids": []}, "must not be empty"),
        (TaskKind.RETRIEVAL, {"distinct_ids": ["a"], "disclosure_type": "Data"}, "CCPA"),
        (TaskKind.DELETION, {"distinct_ids": ["a"], "compliance_type": "X"}, "GDPR, CCPA"),
    ]
    for kind, body, message in bad:
        with pytest.raises(SandboxError, match=message) as err:
            _create(state, kind, **body)
        assert err.value.status == 400
    task = state.tasks[_create(state, TaskKind.RETRIEVAL, compliance_type="ccpa")]
    assert task.disclosure_type is not None
    assert task.disclosure_type.value == "Data"
    task = state.tasks[_create(state, distinct_ids=["a", "a", "b"])]
    assert task.distinct_ids == ("a", "b")


def test_tracking_id_styles_and_shapes() -> None:
    """'Tracking ids are opaque strings (seen both as long decimal numbers and as UUIDs)'."""
    state = _state(FakeClock(), responses={"tracking_id_style": "uuid", "create_shape": "list"})
    tracking_id = _create(state)
    assert len(tracking_id) == 36
    assert tracking_id[14] == "4"
    body = state.create_response(state.tasks[tracking_id])
    assert body["results"][0]["tracking_id"] == tracking_id
    decimal = _state(FakeClock())
    assert _create(decimal).isdigit()


def test_ids_report_and_reset() -> None:
    """Inspection: per id, deletion tasks and successes; reset forgets tasks and calls."""
    clock = FakeClock()
    state = _state(clock)
    _create(state, distinct_ids=["a"])
    clock.advance(100)
    _create(state, distinct_ids=["a"])
    entry = state.ids_report()[PROJECTS[Region.US][0]]["a"]
    assert (entry["deletion_tasks"], entry["deletions_succeeded"]) == (2, 1)
    state.reset()
    assert state.tasks == {}
    assert state.ids_report() == {}


# --- faults, exports, zip -----------------------------------------------------------------------


def test_fault_injector_is_seeded_and_bursts() -> None:
    """Fault injection: seeded decisions; a burst answers exactly N calls with 429."""
    config = fast_config(faults={"error_rate": 0.3, "drop_rate": 0.3, "seed": 3}).faults
    one, two = FaultInjector(config), FaultInjector(config)
    decisions = [one.decide() for _ in range(50)]
    assert decisions == [two.decide() for _ in range(50)]
    assert {d.kind for d in decisions} == {None, FaultKind.ERROR, FaultKind.DROP}
    burst = FaultInjector(fast_config().faults)
    burst.update({"burst_429": 2})
    kinds = [burst.decide().kind for _ in range(3)]
    assert kinds == [FaultKind.BURST_429, FaultKind.BURST_429, None]
    with pytest.raises(ValidationError):
        burst.update({"error_statuses": [404]})


def test_zipcrypto_round_trip_with_stdlib() -> None:
    """'The export is a ZIP protected with the project's API secret as password': stdlib zipfile
    reads what the sandbox writes."""
    payload = (
        bytes(
            random.Random(0).getrandbits(8)  # noqa: S311
            for _ in range(5000)
        )
        + b"x" * 5000
    )
    data = build_zip([("a.bin", payload), ("dir/b.txt", b"")], password=b"pw")
    archive = zipfile.ZipFile(io.BytesIO(data))
    assert archive.read("a.bin", pwd=b"pw") == payload
    assert archive.read("dir/b.txt", pwd=b"pw") == b""
    assert all(info.flag_bits & 1 for info in archive.infolist())
    with pytest.raises(RuntimeError):
        archive.read("a.bin", pwd=b"nope")


def test_export_signature() -> None:
    """'result: a signed link to the export': HMAC over tracking id and expiry."""
    signature = export.sign(b"k", "42", 100)
    assert export.verify(b"k", "42", 100, signature)
    assert not export.verify(b"k", "42", 101, signature)
    assert not export.verify(b"other", "42", 100, signature)


# --- config and CLI -----------------------------------------------------------------------------


def test_example_config_file_loads() -> None:
    """The shipped example config (examples/sandbox/config.yaml) is valid."""
    config = load_config(REPO / "examples" / "sandbox" / "config.yaml")
    assert {p.region for p in config.projects} == set(Region)


def test_json_config_and_masking(tmp_path: Path) -> None:
    """Config files may be JSON; dumps mask OAuth tokens and secrets."""
    path = tmp_path / "c.json"
    path.write_text(
        json.dumps(
            {
                "ports": {"eu": 9000},
                "projects": [
                    {"token": "t", "region": "eu", "oauth_tokens": ["o"], "api_secret": "s"}
                ],
            }
        )
    )
    config = load_config(path)
    assert config.ports == {Region.US: 0, Region.EU: 9000, Region.IN: 0}
    assert config.projects[0].region is Region.EU
    dumped = json.dumps(dump_config(config))
    assert '"o"' not in dumped
    assert '"s"' not in dumped
    assert dump_config(config, reveal_secrets=True)["projects"][0]["api_secret"] == "s"
    with pytest.raises(ValidationError):
        SandboxConfig.model_validate({"projects": [{"token": "t"}, {"token": "t"}]})


def test_cli_flags() -> None:
    """CLI: --project replaces the demo projects (without --config); flags override settings."""
    assert {p.token for p in default_config().projects} == {t for t, _, _ in PROJECTS.values()}
    args = build_parser().parse_args(
        [
            "--project",
            "tok:eu:oauth:secret",
            "--port-eu",
            "0",
            "--time-scale",
            "0.5",
            "--rate-limit",
            "0",
            "--tracking-id-style",
            "uuid",
        ]
    )
    config = config_from_args(args)
    (project,) = config.projects
    assert (project.token, project.region) == ("tok", Region.EU)
    assert project.api_secret == SecretStr("secret")
    assert config.ports[Region.EU] == 0
    assert config.ports[Region.US] == 8701
    assert config.lifecycle.time_scale == 0.5
    assert config.limits.rate_limit_per_s == 0
    assert config.responses.tracking_id_style == "uuid"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--project", "only-token"])
