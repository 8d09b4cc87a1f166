"""Contract tests of the sandbox's GDPR API over real HTTP, each tied to a line of the fact sheet
(/work/shared/mixpanel-gdpr-api.md, quoted in the docstrings)."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from mixpanel_dsr.mixpanel.types import Region
from mixpanel_dsr.sandbox import RunningSandbox
from tests.sandbox.helpers import Api
from tests.sandbox_fixtures import PROJECTS, FakeClock, MakeSandbox, SandboxAdmin, fast_config

pytestmark = pytest.mark.timeout(30)


# --- endpoints and hosts ------------------------------------------------------------------------


@pytest.mark.parametrize("slash", ["/", ""])
async def test_create_deletion_default_shape(
    api: Api, client: httpx.AsyncClient, slash: str
) -> None:
    """'Create: {"status":"ok","results":{"task_id":"<id>"}}' at
    'POST /data-deletions/v3.0/?token=T' (path accepted with and without the trailing slash)."""
    url = api.url(Region.US, "deletion").rstrip("/") + slash
    response = await client.post(
        url, params=api.params(Region.US), headers=api.auth(Region.US), json={"distinct_ids": ["a"]}
    )
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert re.fullmatch(r"\d{19}", body["results"]["task_id"])


async def test_all_endpoints_answer_with_and_without_slash(
    api: Api, client: httpx.AsyncClient
) -> None:
    """'| retrieval status | GET /data-retrievals/v3.0/{tracking_id}?token=T |' and the other rows
    of the endpoint table; each is served with and without a trailing slash."""
    deletion = await api.create_id("deletion")
    retrieval = await api.create_id("retrieval")
    for kind, tracking_id in (("deletion", deletion), ("retrieval", retrieval)):
        for suffix in ("", "/"):
            url = api.url(Region.US, kind, tracking_id) + suffix
            response = await client.get(
                url, params=api.params(Region.US), headers=api.auth(Region.US)
            )
            assert response.status_code == 200
            assert response.json()["results"]["status"] == "PENDING"
    retrieval_create = await client.post(
        api.url(Region.US, "retrieval").rstrip("/"),
        params=api.params(Region.US),
        headers=api.auth(Region.US),
        json={"distinct_ids": ["x"]},
    )
    assert retrieval_create.status_code == 200


@pytest.mark.parametrize("region", list(Region))
async def test_each_region_has_its_own_port(
    api: Api, sandbox: RunningSandbox, region: Region
) -> None:
    """'A project lives in exactly one region; calls for it must go to that region's host.'"""
    assert len(set(sandbox.ports.values())) == 3
    assert sandbox.base_urls[region].endswith("/api/app")
    tracking_id = await api.create_id("deletion", region)
    assert await api.state("deletion", tracking_id, region) == "PENDING"


async def test_project_on_another_regions_host_is_unknown(
    api: Api, client: httpx.AsyncClient
) -> None:
    """'calls for it must go to that region's host': the EU token on the US host is refused exactly
    like an unknown project token."""
    wrong_region = await api.create(
        "deletion", Region.US, token=PROJECTS[Region.EU][0], headers=api.auth(Region.EU)
    )
    unknown = await api.create("deletion", Region.US, token="no-such-project")
    assert wrong_region.status_code == unknown.status_code == 403
    assert (
        wrong_region.json()
        == unknown.json()
        == {
            "status": "error",
            "error": "project not found for this token",
        }
    )


async def test_mixpanel_host_header_selects_region(api: Api) -> None:
    """'| EU (EU Data Residency projects) | https://eu.mixpanel.com/api/app |': a request whose Host
    is eu.mixpanel.com is treated as EU whatever port it reached."""
    headers = {**api.auth(Region.EU), "Host": "eu.mixpanel.com"}
    response = await api.create(
        "deletion", Region.US, token=PROJECTS[Region.EU][0], headers=headers
    )
    assert response.status_code == 200
    headers = {**api.auth(Region.US), "Host": "in.mixpanel.com"}
    response = await api.create("deletion", Region.US, headers=headers)
    assert response.status_code == 403


async def test_no_cancel_for_retrievals(api: Api, client: httpx.AsyncClient) -> None:
    """'There is no documented endpoint to list earlier requests, and none to cancel a
    retrieval.'"""
    tracking_id = await api.create_id("retrieval")
    response = await client.delete(
        api.url(Region.US, "retrieval", tracking_id),
        params=api.params(Region.US),
        headers=api.auth(Region.US),
    )
    assert response.status_code == 405
    assert response.json()["status"] == "error"


# --- authentication -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Basic abc"}, {"Authorization": "Bearer"}, {"Authorization": "demo"}],
)
async def test_missing_or_malformed_bearer_is_401(api: Api, headers: dict[str, str]) -> None:
    """'Every call carries Authorization: Bearer <GDPR OAuth token>'; errors use
    '{"status": "error", "error": "<text>"} (401, 403)'."""
    response = await api.create("deletion", headers=headers)
    assert response.status_code == 401
    body = response.json()
    assert body["status"] == "error"
    assert isinstance(body["error"], str)


async def test_wrong_bearer_is_403(api: Api, admin: SandboxAdmin) -> None:
    """'The token is user-specific, its scope covers only these APIs': another project's token is
    refused with 403 and the error envelope, and nothing is created."""
    response = await api.create("deletion", headers=api.auth(Region.US, PROJECTS[Region.EU][1]))
    assert response.status_code == 403
    assert response.json() == {
        "status": "error",
        "error": "OAuth token is not valid for this project",
    }
    assert await admin.tasks() == []


async def test_expired_bearer_is_403(make_sandbox: MakeSandbox, client: httpx.AsyncClient) -> None:
    """'it expires one year after creation': an expired token gets 403 (a valid one 200)."""
    past = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    future = (datetime.now(UTC) + timedelta(days=300)).isoformat()
    project = {
        "token": "p",
        "region": "US",
        "oauth_tokens": [
            {"token": "old", "expires_at": past},
            {"token": "new", "expires_at": future},
        ],
    }
    api = Api(await make_sandbox(fast_config(rate_limit_per_s=0, projects=[project])), client)
    expired = await api.create("deletion", token="p", headers=api.auth(Region.US, "old"))
    assert expired.status_code == 403
    assert expired.json() == {"status": "error", "error": "OAuth token has expired"}
    assert (
        await api.create("deletion", token="p", headers=api.auth(Region.US, "new"))
    ).status_code == 200


async def test_missing_project_token_is_400(api: Api, client: httpx.AsyncClient) -> None:
    """'Every call carries the project token as query parameter ?token=<project token>'."""
    response = await client.post(
        api.url(Region.US, "deletion"), headers=api.auth(Region.US), json={"distinct_ids": ["a"]}
    )
    assert response.status_code == 400
    assert "token" in response.json()["error"]


# --- request body -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "body", "content"),
    [
        ("deletion", None, b"not json"),
        ("deletion", None, b"[1, 2]"),
        ("deletion", {}, None),
        ("deletion", {"distinct_ids": "a"}, None),
        ("deletion", {"distinct_ids": []}, None),
        ("deletion", {"distinct_ids": ["a", 2]}, None),
        ("deletion", {"distinct_ids": ["a", ""]}, None),
        ("deletion", {"distinct_ids": ["a"], "compliance_type": "HIPAA"}, None),
        ("deletion", {"distinct_ids": ["a"], "compliance_type": 1}, None),
        (
            "deletion",
            {"distinct_ids": ["a"], "compliance_type": "CCPA", "disclosure_type": "Data"},
            None,
        ),
        ("retrieval", {"distinct_ids": ["a"], "disclosure_type": "Data"}, None),
        (
            "retrieval",
            {"distinct_ids": ["a"], "compliance_type": "GDPR", "disclosure_type": "Data"},
            None,
        ),
        (
            "retrieval",
            {"distinct_ids": ["a"], "compliance_type": "CCPA", "disclosure_type": "All"},
            None,
        ),
        ("retrieval", {"distinct_ids": ["a"], "subject_request_id": "NOT-A-UUID"}, None),
        ("retrieval", {"distinct_ids": ["a"], "status_callback_urls": ["http://insecure"]}, None),
    ],
)
async def test_invalid_bodies_are_400(
    api: Api, admin: SandboxAdmin, kind: str, body: Any, content: bytes | None
) -> None:
    """'Bodies are JSON'; 'distinct_ids: array of strings'; 'compliance_type: GDPR or CCPA';
    'disclosure_type (retrievals, CCPA only): Data, Categories, Sources'; 'subject_request_id
    (lower-case UUIDv4 ...) and status_callback_urls (<=5 HTTPS URLs)'."""
    response = await api.create(kind, body=body, content=content)
    assert response.status_code == 400
    assert response.json()["status"] == "error"
    assert await admin.tasks() == []


async def test_id_limit_default_2000(api: Api) -> None:
    """'Limit 2000 per request ... Treat the limit as a per-project setting with default 2000 and
    handle a 400 for "too many".'"""
    ok = await api.create("deletion", ids=[f"u{i}" for i in range(2000)])
    assert ok.status_code == 200
    too_many = await api.create("deletion", ids=[f"u{i}" for i in range(2001)])
    assert too_many.status_code == 400
    assert "too many" in too_many.json()["error"]


async def test_id_limit_per_project(make_sandbox: MakeSandbox, client: httpx.AsyncClient) -> None:
    """'a project with Group Analytics may get a lower limit, floor(2000 / (data_groups + 1))'."""
    project = {"token": "grp", "region": "EU", "oauth_tokens": ["o"], "id_limit": 666}
    api = Api(await make_sandbox(fast_config(rate_limit_per_s=0, projects=[project])), client)
    headers = api.auth(Region.EU, "o")
    ok = await api.create("retrieval", Region.EU, token="grp", headers=headers, ids=["x"] * 666)
    assert ok.status_code == 200
    bad = await api.create("deletion", Region.EU, token="grp", headers=headers, ids=["x"] * 667)
    assert bad.status_code == 400
    assert "too many" in bad.json()["error"]


@pytest.mark.parametrize(
    ("given", "echoed"), [(None, "gdpr"), ("GDPR", "gdpr"), ("CCPA", "ccpa"), ("ccpa", "ccpa")]
)
async def test_compliance_type_default_and_echo(api: Api, given: str | None, echoed: str) -> None:
    """'compliance_type: GDPR or CCPA; default GDPR. Responses echo it lower-case.'"""
    body: dict[str, Any] = {"distinct_ids": ["a"]}
    if given is not None:
        body["compliance_type"] = given
    tracking_id = await api.create_id("deletion", body=body)
    results = (await api.status("deletion", tracking_id)).json()["results"]
    assert results["compliance_type"] == echoed


# --- responses ----------------------------------------------------------------------------------


async def test_list_shape_201_and_uuid_ids(
    make_sandbox: MakeSandbox, client: httpx.AsyncClient
) -> None:
    """'(HTTP 201 in the OpenAPI file). Unclear: the prose shows results as a one-element array of a
    task object with tracking_id, status, compliance_type, distinct_id_count'; 'Tracking ids are
    opaque strings (seen both as long decimal numbers and as UUIDs)'."""
    config = fast_config(
        rate_limit_per_s=0,
        responses={"create_shape": "list", "create_status": 201, "tracking_id_style": "uuid"},
    )
    api = Api(await make_sandbox(config), client)
    response = await api.create(
        "deletion", body={"distinct_ids": ["a", "b"], "compliance_type": "CCPA"}
    )
    assert response.status_code == 201
    (task,) = response.json()["results"]
    assert task["status"] == "PENDING"
    assert task["compliance_type"] == "ccpa"
    assert task["distinct_id_count"] == 2
    assert re.fullmatch(
        r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", task["tracking_id"]
    )
    assert await api.state("deletion", task["tracking_id"]) == "PENDING"


async def test_deletion_status_shape(api: Api) -> None:
    """'Status: {"status":"ok","results":{"status":"PENDING","result":"","distinct_ids":["1"]}};
    deletions may also carry tracking_id, requesting_user, compliance_type, project_id,
    date_requested.'"""
    tracking_id = await api.create_id("deletion", ids=["1"])
    body = (await api.status("deletion", tracking_id)).json()
    assert body["status"] == "ok"
    results = body["results"]
    assert {k: results[k] for k in ("status", "result", "distinct_ids")} == {
        "status": "PENDING",
        "result": "",
        "distinct_ids": ["1"],
    }
    assert results["tracking_id"] == tracking_id
    assert results["requesting_user"] == "sandbox-user@example.com"
    assert results["compliance_type"] == "gdpr"
    assert isinstance(results["project_id"], int)
    datetime.fromisoformat(results["date_requested"])


async def test_retrieval_status_shape(api: Api) -> None:
    """'Status: {"status":"ok","results":{"status":"PENDING","result":"","distinct_ids":["1"]}}'."""
    tracking_id = await api.create_id("retrieval", ids=["1"])
    body = (await api.status("retrieval", tracking_id)).json()
    assert body == {
        "status": "ok",
        "results": {"status": "PENDING", "result": "", "distinct_ids": ["1"]},
    }


async def test_unknown_tracking_id_is_not_found(api: Api) -> None:
    """'Task states: ... NOT_FOUND': an unknown tracking id (or one of another project or kind)
    answers HTTP 200 with results.status NOT_FOUND."""
    other = await api.create_id("deletion", Region.EU)
    retrieval = await api.create_id("retrieval")
    for kind, tracking_id in (("deletion", "12345"), ("deletion", other), ("deletion", retrieval)):
        response = await api.status(kind, tracking_id)
        assert response.status_code == 200
        assert response.json()["results"]["status"] == "NOT_FOUND"


async def test_not_found_as_404_when_configured(
    make_sandbox: MakeSandbox, client: httpx.AsyncClient
) -> None:
    """'NOT_FOUND' (unclear whether as HTTP 404): `responses.not_found_status: 404` switches."""
    api = Api(
        await make_sandbox(fast_config(rate_limit_per_s=0, responses={"not_found_status": 404})),
        client,
    )
    response = await api.status("retrieval", "42")
    assert response.status_code == 404
    assert response.json()["status"] == "error"


# --- life cycle ---------------------------------------------------------------------------------


async def test_life_cycle_in_real_time(api: Api) -> None:
    """'Task states: PENDING (accepted), STAGING (still cancellable), STARTED (no longer
    cancellable), SUCCESS' — walked through in real time with 0.3 s states."""
    tracking_id = await api.create_id("deletion")
    seen = [await api.state("deletion", tracking_id)]
    for _ in range(30):
        await asyncio.sleep(0.1)
        state = await api.state("deletion", tracking_id)
        if state != seen[-1]:
            seen.append(state)
        if state == "SUCCESS":
            break
    assert seen == ["PENDING", "STAGING", "STARTED", "SUCCESS"]


async def test_cancel_pending_then_revoked(api: Api, admin: SandboxAdmin) -> None:
    """'cancel deletion | DELETE /data-deletions/v3.0/{tracking_id}?token=T -> 204';
    'REVOKED (cancelled)'."""
    tracking_id = await api.create_id("deletion")
    response = await api.cancel(tracking_id)
    assert response.status_code == 204
    assert response.content == b""
    assert await api.state("deletion", tracking_id) == "REVOKED"
    assert (await api.cancel(tracking_id)).status_code == 204  # idempotent (documented choice)
    await admin.advance_clock(60)
    assert await api.state("deletion", tracking_id) == "REVOKED"


async def test_cancel_staging_ok_started_405(api: Api, admin: SandboxAdmin) -> None:
    """'STAGING (still cancellable), STARTED (no longer cancellable)'; '405 when no longer
    cancellable'."""
    staging = await api.create_id("deletion")
    started = await api.create_id("deletion")
    done = await api.create_id("deletion")
    await admin.force_state(staging, "STAGING")
    await admin.force_state(started, "STARTED")
    await admin.force_state(done, "SUCCESS")
    assert (await api.cancel(staging)).status_code == 204
    for tracking_id in (started, done):
        response = await api.cancel(tracking_id)
        assert response.status_code == 405
        assert response.json()["status"] == "error"
    assert await api.state("deletion", started) == "STARTED"


async def test_cancel_with_id_in_body(api: Api, client: httpx.AsyncClient) -> None:
    """'(unclear: one page shows the id in a body instead of the path)': both forms are served."""
    tracking_id = await api.create_id("deletion")
    response = await client.request(
        "DELETE",
        api.url(Region.US, "deletion"),
        params=api.params(Region.US),
        headers=api.auth(Region.US),
        json={"tracking_id": tracking_id},
    )
    assert response.status_code == 204
    assert await api.state("deletion", tracking_id) == "REVOKED"


async def test_cancel_unknown_is_404(api: Api) -> None:
    """'NOT_FOUND': cancelling a tracking id the project does not have answers 404."""
    response = await api.cancel("999")
    assert response.status_code == 404
    assert response.json()["status"] == "error"


async def test_failure_and_unknown_injection(
    make_sandbox: MakeSandbox, client: httpx.AsyncClient
) -> None:
    """'FAILURE ("check the input and create a new task")'; 'UNKNOWN (error while looking it up:
    transient)'."""
    clock = FakeClock()
    config = fast_config(rate_limit_per_s=0, lifecycle={"failure_rate": 1.0})
    sandbox = await make_sandbox(config, clock)
    api = Api(sandbox, client)
    tracking_id = await api.create_id("deletion")
    clock.advance(10)
    assert await api.state("deletion", tracking_id) == "FAILURE"
    admin = SandboxAdmin(sandbox, client)
    await client.post(f"{admin.url}/settings", json={"lifecycle": {"unknown_rate": 1.0}})
    assert await api.state("deletion", tracking_id) == "UNKNOWN"


# --- limits -------------------------------------------------------------------------------------


async def test_rate_limit_429_without_retry_after(
    make_sandbox: MakeSandbox, client: httpx.AsyncClient
) -> None:
    """'1 request per second for the GDPR APIs; over it -> HTTP 429. The record says nothing of a
    Retry-After header' — status checks and cancels count as well."""
    clock = FakeClock()
    config = fast_config(rate_limit_per_s=1.0, state_seconds=10)
    api = Api(await make_sandbox(config, clock), client)
    tracking_id = await api.create_id("deletion")
    refused = await api.status("deletion", tracking_id)
    assert refused.status_code == 429
    assert "Retry-After" not in refused.headers
    assert refused.json()["status"] == "error"
    clock.advance(0.5)
    assert (await api.cancel(tracking_id)).status_code == 429
    clock.advance(0.5)
    assert (await api.status("deletion", tracking_id)).status_code == 200
    clock.advance(1.0)
    assert (await api.cancel(tracking_id)).status_code == 204
    assert (await api.create("deletion")).status_code == 429


async def test_rate_limit_is_per_project(
    make_sandbox: MakeSandbox, client: httpx.AsyncClient
) -> None:
    """'nor whether the limit is per project or per token (unclear: one unattributed client claims
    "per project")': the sandbox limits per project."""
    api = Api(await make_sandbox(fast_config(rate_limit_per_s=1.0), FakeClock()), client)
    for region in Region:
        assert (await api.create("deletion", region)).status_code == 200
    assert (await api.create("deletion", Region.EU)).status_code == 429


async def test_outstanding_scan_budget_429(
    make_sandbox: MakeSandbox, client: httpx.AsyncClient
) -> None:
    """'at most ~5 years of outstanding retrieval scans per project ... so few retrievals can be
    outstanding at once': with 730 days of history, two fit in 1825 days, a third gets 429."""
    clock = FakeClock()
    api = Api(await make_sandbox(fast_config(rate_limit_per_s=0), clock), client)
    first = await api.create_id("retrieval")
    await api.create_id("retrieval")
    refused = await api.create("retrieval")
    assert refused.status_code == 429
    assert "outstanding" in refused.json()["error"]
    assert (await api.create("deletion")).status_code == 200  # deletions do not scan
    assert (await api.create("retrieval", Region.EU)).status_code == 200  # per project
    clock.advance(10)
    assert await api.state("retrieval", first) == "SUCCESS"
    assert (await api.create("retrieval")).status_code == 200


async def test_conflict_409_when_enabled(
    make_sandbox: MakeSandbox, client: httpx.AsyncClient
) -> None:
    """'Unclear: an unattributed client handles HTTP 409 for distinct ids that already have a
    running deletion, body {"status":"error","error":{"conflicting_distinct_ids":[...],
    "conflicting_task_ids":[...]}}, rejecting the whole request.'"""
    clock = FakeClock()
    sandbox = await make_sandbox(
        fast_config(rate_limit_per_s=0, limits={"conflict_409": True}), clock
    )
    api = Api(sandbox, client)
    first = await api.create_id("deletion", ids=["a", "b"])
    response = await api.create("deletion", ids=["b", "c"])
    assert response.status_code == 409
    assert response.json() == {
        "status": "error",
        "error": {"conflicting_distinct_ids": ["b"], "conflicting_task_ids": [first]},
    }
    assert len(await SandboxAdmin(sandbox, client).tasks()) == 1  # whole request rejected
    clock.advance(10)
    assert (await api.create("deletion", ids=["b", "c"])).status_code == 200


async def test_no_conflict_by_default(api: Api) -> None:
    """'Unclear: ... HTTP 409 ...': off by default, overlapping deletions are accepted."""
    await api.create_id("deletion", ids=["a"])
    assert (await api.create("deletion", ids=["a"])).status_code == 200
