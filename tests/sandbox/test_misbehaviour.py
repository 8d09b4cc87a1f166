"""The misbehaviour modes (issue 10): each over real HTTP, switched on for one project at runtime
with ``POST /_sandbox/projects/{token}`` ``{"faults": {...}}`` while the other projects answer as
usual."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from mixpanel_dsr.mixpanel.types import Region
from mixpanel_dsr.sandbox import FaultConfig, RunningSandbox
from mixpanel_dsr.sandbox.faults import FaultInjector, FaultKind, TaskFault, combine
from tests.sandbox.helpers import Api
from tests.sandbox_fixtures import PROJECTS, MakeSandbox, SandboxAdmin, fast_config

pytestmark = pytest.mark.timeout(30)

US = PROJECTS[Region.US][0]
DAY = 86400.0


async def _project_faults(
    client: httpx.AsyncClient, sandbox: RunningSandbox, faults: dict[str, Any] | None
) -> dict[str, Any]:
    response = await client.post(f"{sandbox.admin_url}/projects/{US}", json={"faults": faults})
    assert response.status_code == 200, response.text
    project: dict[str, Any] = response.json()["project"]
    return project


async def _last_call(admin: SandboxAdmin) -> dict[str, Any]:
    call: dict[str, Any] = (await admin.calls())["calls"][-1]
    return call


async def test_forbidden_project_answers_403_to_everything_and_others_do_not(
    api: Api, admin: SandboxAdmin, client: httpx.AsyncClient, sandbox: RunningSandbox
) -> None:
    tracking_id = await api.create_id("deletion")
    project = await _project_faults(client, sandbox, {"forbidden": True})
    assert project["faults"]["forbidden"] is True
    for response in (
        await api.create("deletion", ids=["x"]),
        await api.status("deletion", tracking_id),
        await api.cancel(tracking_id),
    ):
        assert response.status_code == 403
        assert response.json()["status"] == "error"
    assert (await _last_call(admin))["fault"] == "forbidden"
    assert len(await admin.tasks(project=US)) == 1
    assert (await api.create("deletion", Region.EU)).status_code == 200
    await _project_faults(client, sandbox, None)
    assert (await api.status("deletion", tracking_id)).status_code == 200


async def test_html_error_page_from_a_proxy_does_nothing(
    api: Api, admin: SandboxAdmin, client: httpx.AsyncClient, sandbox: RunningSandbox
) -> None:
    await _project_faults(client, sandbox, {"html_error_rate": 1.0, "html_error_status": 504})
    response = await api.create("deletion")
    assert response.status_code == 504
    assert response.headers["Content-Type"].startswith("text/html")
    assert "<html>" in response.text
    assert await admin.tasks() == []
    assert (await _last_call(admin))["fault"] == "html_error"


async def test_error_body_with_200_does_nothing(
    api: Api, admin: SandboxAdmin, client: httpx.AsyncClient, sandbox: RunningSandbox
) -> None:
    await _project_faults(client, sandbox, {"error_body_rate": 1.0})
    response = await api.create("deletion")
    assert response.status_code == 200
    assert response.json()["status"] == "error"
    assert isinstance(response.json()["error"], str)
    assert await admin.tasks() == []


async def test_empty_body_keeps_the_status_and_the_work(
    api: Api, admin: SandboxAdmin, client: httpx.AsyncClient, sandbox: RunningSandbox
) -> None:
    await _project_faults(client, sandbox, {"empty_body_rate": 1.0})
    response = await api.create("deletion", ids=["e-1"])
    assert (response.status_code, response.content) == (200, b"")
    [task] = await admin.tasks()
    assert task["distinct_ids"] == ["e-1"]
    status = await api.status("deletion", task["tracking_id"])
    assert (status.status_code, status.content) == (200, b"")
    assert (await _last_call(admin))["fault"] == "empty_body"


async def test_unknown_states_only_in_status_answers(
    api: Api, admin: SandboxAdmin, client: httpx.AsyncClient, sandbox: RunningSandbox
) -> None:
    await _project_faults(
        client, sandbox, {"unknown_state_rate": 1.0, "unknown_states": ["WEIRD_STATE"]}
    )
    tracking_id = await api.create_id("deletion")  # creates are answered as usual
    response = await api.status("deletion", tracking_id)
    results = response.json()["results"]
    assert (response.status_code, results["status"]) == (200, "WEIRD_STATE")
    assert results["tracking_id"] == tracking_id
    assert (await _last_call(admin))["fault"] == "unknown_state"
    # The task itself goes on: the admin view tells its real state.
    assert (await admin.tasks())[0]["state"] == "PENDING"


async def test_timeout_does_the_work_and_answers_after_the_client_gave_up(
    api: Api, admin: SandboxAdmin, client: httpx.AsyncClient, sandbox: RunningSandbox
) -> None:
    await _project_faults(client, sandbox, {"timeout_rate": 1.0, "timeout_seconds": 1.0})
    with pytest.raises(httpx.ReadTimeout):
        await client.post(
            api.url(Region.US, "deletion"),
            params=api.params(Region.US),
            headers=api.auth(Region.US),
            json={"distinct_ids": ["slow"]},
            timeout=0.2,
        )
    [task] = await admin.tasks()
    assert task["distinct_ids"] == ["slow"]
    assert (await _last_call(admin))["fault"] == "timeout"


async def test_vanished_task_reads_not_found_and_is_not_carried_out(
    api: Api, admin: SandboxAdmin, client: httpx.AsyncClient, sandbox: RunningSandbox
) -> None:
    await _project_faults(client, sandbox, {"vanish_rate": 1.0, "vanish_after_seconds": 60})
    tracking_id = await api.create_id("deletion", ids=["v-1"])
    assert await api.state("deletion", tracking_id) == "PENDING"
    await admin.advance_clock(61)
    assert await api.state("deletion", tracking_id) == "NOT_FOUND"
    [task] = await admin.tasks()
    assert (task["state"], task["faults"]) == ("NOT_FOUND", ["vanish"])
    entry = (await admin.ids(US))[US]["v-1"]
    assert (entry["deletion_tasks"], entry["deletions_succeeded"]) == (1, 0)
    assert (await api.cancel(tracking_id)).status_code == 404


async def test_stuck_started_lasts_thirty_scaled_days_then_ends(
    api: Api, admin: SandboxAdmin, client: httpx.AsyncClient, sandbox: RunningSandbox
) -> None:
    await _project_faults(client, sandbox, {"stuck_started_rate": 1.0})
    tracking_id = await api.create_id("deletion")
    await admin.advance_clock(1)  # past PENDING and STAGING (0.3 s each)
    assert await api.state("deletion", tracking_id) == "STARTED"
    await admin.advance_clock(29 * DAY)
    assert await api.state("deletion", tracking_id) == "STARTED"
    assert (await api.cancel(tracking_id)).status_code == 405
    await admin.advance_clock(DAY)
    assert await api.state("deletion", tracking_id) == "SUCCESS"
    assert (await admin.tasks())[0]["faults"] == ["stuck_started"]


async def test_conflict_on_resend_names_earlier_tasks_whatever_their_state(
    api: Api, admin: SandboxAdmin, client: httpx.AsyncClient, sandbox: RunningSandbox
) -> None:
    first = await api.create_id("deletion", ids=["a", "b"])
    await admin.force_state(first, "FAILURE")
    await _project_faults(client, sandbox, {"conflict_on_resend": True})
    response = await api.create("deletion", ids=["b", "c"])
    assert response.status_code == 409
    assert response.json()["error"] == {
        "conflicting_distinct_ids": ["b"],
        "conflicting_task_ids": [first],
    }
    call = await _last_call(admin)
    assert (call["status"], call["fault"]) == (409, "conflict_on_resend")
    assert len(await admin.tasks()) == 1
    assert (await api.create("deletion", ids=["c"])).status_code == 200
    # Retrievals are never refused for it.
    assert (await api.create("retrieval", ids=["a"])).status_code == 200


async def test_project_fault_changes_merge_and_reset_replaces(
    client: httpx.AsyncClient, sandbox: RunningSandbox
) -> None:
    await _project_faults(client, sandbox, {"forbidden": True, "seed": 3})
    merged = await _project_faults(client, sandbox, {"error_body_rate": 0.5})
    assert (merged["faults"]["forbidden"], merged["faults"]["error_body_rate"]) == (True, 0.5)
    assert merged["faults"]["seed"] == 3
    replaced = await _project_faults(client, sandbox, {"reset": True, "timeout_rate": 0.1})
    assert replaced["faults"]["forbidden"] is False
    assert replaced["faults"]["timeout_rate"] == 0.1
    bad = await client.post(
        f"{sandbox.admin_url}/projects/{US}", json={"faults": {"html_error_status": 200}}
    )
    assert bad.status_code == 400
    assert (await _project_faults(client, sandbox, None))["faults"] is None


async def test_project_faults_from_the_config_file_are_seeded(make_sandbox: MakeSandbox) -> None:
    """Two sandboxes with the same project fault seed fail the same calls."""
    sequences = []
    for _ in range(2):
        config = fast_config(rate_limit_per_s=0)
        projects = [
            p.model_copy(update={"faults": FaultConfig(error_body_rate=0.5, seed=11)})
            if p.token == US
            else p
            for p in config.projects
        ]
        data = config.model_dump()
        data["projects"] = [p.model_dump() for p in projects]
        running = await make_sandbox(type(config).model_validate(data))
        async with httpx.AsyncClient(timeout=10) as http:
            api = Api(running, http)
            statuses = []
            for _ in range(12):
                body = (await api.create("deletion")).json()
                statuses.append(body["status"])
        sequences.append(statuses)
    assert sequences[0] == sequences[1]
    assert {"ok", "error"} == set(sequences[0])


async def test_sandbox_wide_modes_apply_to_every_project(api: Api, admin: SandboxAdmin) -> None:
    await admin.set_faults(forbidden=True)
    assert (await api.create("deletion", Region.US)).status_code == 403
    assert (await api.create("deletion", Region.EU)).status_code == 403
    snapshot = await admin.set_faults(forbidden=False)
    assert snapshot["forbidden"] is False
    assert json.loads((await api.create("deletion", Region.IN)).content)["status"] == "ok"


def test_the_sandbox_wide_fault_wins_and_delays_add_up() -> None:
    wide = FaultInjector(FaultConfig(error_rate=1.0, error_statuses=[503], latency_seconds=0.5))
    own = FaultInjector(FaultConfig(forbidden=True, latency_seconds=0.25))
    decision = combine(wide.decide(), own.decide())
    assert (decision.kind, decision.status, decision.latency) == (FaultKind.ERROR, 503, 0.75)
    calm = FaultInjector(FaultConfig())
    assert combine(calm.decide(), own.decide()).kind is FaultKind.FORBIDDEN
    assert combine(calm.decide(), None).kind is None


def test_new_modes_left_off_draw_nothing_so_old_seeds_keep_their_sequence() -> None:
    old = FaultInjector(FaultConfig(error_rate=0.3, drop_rate=0.3, seed=5))
    new = FaultInjector(FaultConfig(error_rate=0.3, drop_rate=0.3, seed=5, conflict_on_resend=True))
    for _ in range(50):
        assert old.decide(status_call=True) == new.decide(status_call=True)
        assert old.decide_task(1.0) == new.decide_task(1.0)


def test_task_decisions_scale_stuck_days_with_the_life_cycle() -> None:
    injector = FaultInjector(FaultConfig(stuck_started_rate=1.0, vanish_rate=1.0))
    drawn = injector.decide_task(0.1)
    assert drawn.stuck_seconds == 30 * DAY * 0.1
    assert drawn.vanish_after == 1.0
    assert drawn.faults == (TaskFault.VANISH, TaskFault.STUCK_STARTED)
