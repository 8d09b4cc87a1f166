"""The 409 for ids already being deleted, switched on per project through the admin API.

Fact sheet: 'Unclear: an unattributed client handles HTTP 409 for distinct ids that already have a
running deletion, body {"status":"error","error":{"conflicting_distinct_ids":[...],
"conflicting_task_ids":[...]}}, rejecting the whole request.' An end-to-end test turns it on for
its own project while other tests share the same sandbox process.
"""

from __future__ import annotations

from typing import Any

import httpx

from mixpanel_dsr.mixpanel.types import Region
from mixpanel_dsr.sandbox import RunningSandbox
from tests.sandbox.helpers import Api
from tests.sandbox_fixtures import FAST_STATE_SECONDS, FakeClock, MakeSandbox, fast_config

#: A project registered at runtime with the 409 switched on, next to the demo projects.
TOKEN, OAUTH = "e2e-409", "e2e-409-oauth"
REGION = Region.US
#: PENDING + STAGING + STARTED in ``fast_config``.
LIFETIME = 3 * FAST_STATE_SECONDS


def _conflict(ids: list[str], tasks: list[str]) -> dict[str, Any]:
    return {
        "status": "error",
        "error": {"conflicting_distinct_ids": ids, "conflicting_task_ids": tasks},
    }


async def _sandbox(make_sandbox: MakeSandbox, clock: FakeClock) -> RunningSandbox:
    return await make_sandbox(fast_config(rate_limit_per_s=0), clock)


async def _register(
    client: httpx.AsyncClient, sandbox: RunningSandbox, **fields: Any
) -> httpx.Response:
    body = {
        "token": TOKEN,
        "region": REGION.value,
        "oauth_tokens": [OAUTH],
        "api_secret": "e2e-409-secret",
        **fields,
    }
    return await client.post(f"{sandbox.admin_url}/projects", json=body)


class _Project:
    """The runtime project's GDPR API."""

    def __init__(self, api: Api) -> None:
        self.api = api

    async def create(self, ids: list[str]) -> httpx.Response:
        headers = self.api.auth(REGION, OAUTH)
        return await self.api.create("deletion", REGION, ids=ids, token=TOKEN, headers=headers)

    async def create_id(self, ids: list[str]) -> str:
        response = await self.create(ids)
        assert response.status_code == 200, response.text
        return str(response.json()["results"]["task_id"])


async def _tasks(client: httpx.AsyncClient, sandbox: RunningSandbox, **query: str) -> list[Any]:
    response = await client.get(f"{sandbox.admin_url}/tasks", params=query)
    return list(response.json()["tasks"])


async def test_per_project_409_names_only_the_overlap(
    make_sandbox: MakeSandbox, client: httpx.AsyncClient
) -> None:
    """Registered with ``conflict_409: true``: a deletion overlapping a running one is refused as a
    whole, naming only the overlapping ids (sorted) and the task that holds them; a request with no
    running id is accepted."""
    clock = FakeClock()
    sandbox = await _sandbox(make_sandbox, clock)
    registered = await _register(client, sandbox, conflict_409=True)
    assert registered.status_code == 201
    assert registered.json()["project"]["conflict_409"] is True
    project = _Project(Api(sandbox, client))
    first = await project.create_id(["b", "a", "c"])
    response = await project.create(["z", "c", "y", "a"])
    assert response.status_code == 409
    assert response.json() == _conflict(["a", "c"], [first])
    assert [t["tracking_id"] for t in await _tasks(client, sandbox, project=TOKEN)] == [first]
    assert (await project.create(["z", "y"])).status_code == 200


async def test_per_project_409_leaves_other_projects_alone(
    make_sandbox: MakeSandbox, client: httpx.AsyncClient
) -> None:
    """The switch is the project's: the demo project of the same region and port (global limit
    off) still accepts overlapping deletions, and its tasks never count as conflicts for the
    switched project."""
    clock = FakeClock()
    sandbox = await _sandbox(make_sandbox, clock)
    await _register(client, sandbox, conflict_409=True)
    api = Api(sandbox, client)
    project = _Project(api)
    await api.create_id("deletion", REGION, ids=["a"])
    await api.create_id("deletion", REGION, ids=["a"])  # global limit off: accepted twice
    own = await project.create_id(["a"])  # the demo project's tasks are not this project's
    assert (await project.create(["a"])).json() == _conflict(["a"], [own])
    await api.create_id("deletion", REGION, ids=["a"])
    projects = (await client.get(f"{sandbox.admin_url}/projects")).json()["projects"]
    switches = {p["token"]: p["conflict_409"] for p in projects}
    assert switches == {
        "demo-token-us": False,
        "demo-token-eu": False,
        "demo-token-in": False,
        TOKEN: True,
    }


async def test_ids_are_accepted_again_once_the_deletion_succeeded(
    make_sandbox: MakeSandbox, client: httpx.AsyncClient
) -> None:
    """'Running' is PENDING, STAGING or STARTED, computed from the clock at the time of the create
    (nobody polls in between): refused up to the last instant of STARTED, accepted at SUCCESS."""
    clock = FakeClock()
    sandbox = await _sandbox(make_sandbox, clock)
    await _register(client, sandbox, conflict_409=True)
    project = _Project(Api(sandbox, client))
    first = await project.create_id(["a", "b"])
    for step, state in ((0.0, "PENDING"), (FAST_STATE_SECONDS, "STAGING")):
        clock.advance(step)
        assert (await project.create(["a"])).json() == _conflict(["a"], [first]), state
    clock.advance(LIFETIME - FAST_STATE_SECONDS - 0.01)  # the last moment of STARTED
    assert (await project.create(["b"])).status_code == 409
    clock.advance(0.01)
    second = await project.create_id(["a", "b"])
    (done,) = await _tasks(client, sandbox, project=TOKEN, state="SUCCESS")
    assert done["tracking_id"] == first
    assert (await project.create(["b"])).json() == _conflict(["b"], [second])


async def test_admin_clock_moves_conflicts_too(
    make_sandbox: MakeSandbox, client: httpx.AsyncClient
) -> None:
    """POST /_sandbox/clock ends the running deletion as far as the 409 is concerned."""
    sandbox = await _sandbox(make_sandbox, FakeClock())
    await _register(client, sandbox, conflict_409=True)
    project = _Project(Api(sandbox, client))
    await project.create_id(["a"])
    assert (await project.create(["a"])).status_code == 409
    await client.post(f"{sandbox.admin_url}/clock", json={"advance_seconds": LIFETIME + 0.01})
    assert (await project.create(["a"])).status_code == 200


async def test_partial_overlap_names_only_the_running_id(
    make_sandbox: MakeSandbox, client: httpx.AsyncClient
) -> None:
    """ids x, y where only x is in a running deletion (y's ended SUCCESS, or was cancelled):
    the 409 names x and x's task only."""
    clock = FakeClock()
    sandbox = await _sandbox(make_sandbox, clock)
    await _register(client, sandbox, conflict_409=True)
    api = Api(sandbox, client)
    project = _Project(api)
    done = await project.create_id(["y"])
    clock.advance(LIFETIME + 0.01)
    revoked = await project.create_id(["y"])
    cancel = await client.delete(
        api.url(REGION, "deletion", revoked),
        params={"token": TOKEN},
        headers=api.auth(REGION, OAUTH),
    )
    assert cancel.status_code == 204
    running = await project.create_id(["x"])
    response = await project.create(["x", "y"])
    assert response.status_code == 409
    assert response.json() == _conflict(["x"], [running])
    states = {t["tracking_id"]: t["state"] for t in await _tasks(client, sandbox, project=TOKEN)}
    assert states == {done: "SUCCESS", revoked: "REVOKED", running: "PENDING"}


async def test_every_task_holding_a_conflicting_id_in_creation_order(
    make_sandbox: MakeSandbox, client: httpx.AsyncClient
) -> None:
    """conflicting_task_ids: every running task holding any conflicting id, oldest first, each
    once even when it holds several of them; tasks holding none are left out."""
    clock = FakeClock()
    sandbox = await _sandbox(make_sandbox, clock)
    await _register(client, sandbox, conflict_409=False)
    project = _Project(Api(sandbox, client))
    first = await project.create_id(["c", "a"])
    await project.create_id(["q"])
    second = await project.create_id(["b", "a", "c"])
    third = await project.create_id(["a"])
    toggle = await client.post(f"{sandbox.admin_url}/projects/{TOKEN}", json={"conflict_409": True})
    assert toggle.status_code == 200
    response = await project.create(["c", "z", "b", "a"])
    assert response.json() == _conflict(["a", "b", "c"], [first, second, third])


async def test_toggle_at_runtime_and_calls_log(
    make_sandbox: MakeSandbox, client: httpx.AsyncClient
) -> None:
    """POST /_sandbox/projects/{token} merges fields into a registered project: the 409 can be
    switched on and off later, without re-sending credentials; null falls back to
    limits.conflict_409. Refused creates are in /_sandbox/calls with status 409."""
    clock = FakeClock()
    sandbox = await _sandbox(make_sandbox, clock)
    admin = sandbox.admin_url
    await _register(client, sandbox)
    project = _Project(Api(sandbox, client))
    first = await project.create_id(["a"])
    await project.create_id(["a"])  # follows the global limit: off
    url = f"{admin}/projects/{TOKEN}"
    switched = (await client.post(url, json={"conflict_409": True})).json()["project"]
    assert switched["conflict_409"] is True
    assert switched["has_api_secret"] is True  # nothing else changed
    assert (await client.get(url)).json()["project"] == switched
    response = await project.create(["a"])  # the credentials still work
    assert response.status_code == 409
    assert response.json()["error"]["conflicting_task_ids"][0] == first
    await client.post(url, json={"conflict_409": False})
    assert (await project.create(["a"])).status_code == 200
    await client.post(url, json={"conflict_409": None})
    await client.post(f"{admin}/settings", json={"limits": {"conflict_409": True}})
    assert (await project.create(["a"])).status_code == 409
    calls = (await client.get(f"{admin}/calls", params={"project": TOKEN})).json()
    assert calls["by_status"] == {"200": 3, "409": 2}
    refused = (await client.get(f"{admin}/calls", params={"status": "409"})).json()["calls"]
    assert [c["operation"] for c in refused] == ["create_deletion"] * 2
    assert all(c["distinct_ids"] == ["a"] and c["tracking_id"] is None for c in refused)
    assert "conflicting_task_ids" in refused[0]["error"]


async def test_project_admin_errors(make_sandbox: MakeSandbox, client: httpx.AsyncClient) -> None:
    """Unknown project: 404; bad value or a token change: 400; a reset drops the runtime project,
    and keep_projects keeps it with its switch."""
    sandbox = await _sandbox(make_sandbox, FakeClock())
    admin = sandbox.admin_url
    await _register(client, sandbox, conflict_409=True)
    assert (await client.get(f"{admin}/projects/nope")).status_code == 404
    missing = await client.post(f"{admin}/projects/nope", json={"conflict_409": True})
    assert missing.status_code == 404
    bad = await client.post(f"{admin}/projects/{TOKEN}", json={"conflict_409": [1]})
    assert bad.status_code == 400
    assert "conflict_409" in bad.json()["error"]
    moved = await client.post(f"{admin}/projects/{TOKEN}", json={"token": "other"})
    assert moved.status_code == 400
    unknown = await client.post(f"{admin}/projects/{TOKEN}", json={"bogus": 1})
    assert unknown.status_code == 400
    await client.post(f"{admin}/reset", json={"keep_projects": True})
    assert (await client.get(f"{admin}/projects/{TOKEN}")).json()["project"]["conflict_409"]
    await client.post(f"{admin}/reset")
    assert (await client.get(f"{admin}/projects/{TOKEN}")).status_code == 404
