"""Exports, fault injection and the /_sandbox/ admin endpoints over real HTTP; docstrings quote the
fact sheet line (or the sandbox requirement) each test checks."""

from __future__ import annotations

import io
import json
import logging
import time
import zipfile
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse

import httpx
import pytest

from mixpanel_dsr.mixpanel.types import Region
from mixpanel_dsr.sandbox import RunningSandbox
from tests.sandbox.helpers import Api
from tests.sandbox_fixtures import PROJECTS, FakeClock, MakeSandbox, SandboxAdmin, fast_config

pytestmark = pytest.mark.timeout(30)


async def _finished_retrieval(api: Api, admin: SandboxAdmin, body: dict[str, Any]) -> str:
    tracking_id = await api.create_id("retrieval", Region.EU, body=body)
    await admin.advance_clock(10)
    response = await api.status("retrieval", tracking_id, Region.EU)
    results = response.json()["results"]
    assert results["status"] == "SUCCESS"
    return str(results["result"])


# --- exports ------------------------------------------------------------------------------------


async def test_export_link_and_password_zip(
    api: Api, admin: SandboxAdmin, client: httpx.AsyncClient
) -> None:
    """'A successful retrieval's status carries result: a signed link to the export, empty string
    until done. The export is a ZIP protected with the project's API secret as password.'"""
    link = await _finished_retrieval(api, admin, {"distinct_ids": ["alice", "bob"]})
    assert link.startswith(api.sandbox.origins[Region.EU] + "/_sandbox/exports/")
    response = await client.get(link)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    assert sorted(archive.namelist()) == ["events.json", "manifest.json", "people.json"]
    with pytest.raises(RuntimeError, match="password required"):
        archive.read("events.json")
    with pytest.raises(RuntimeError, match="Bad password"):
        archive.read("events.json", pwd=b"wrong")
    secret = PROJECTS[Region.EU][2].encode()
    events = [json.loads(line) for line in archive.read("events.json", pwd=secret).splitlines()]
    assert {e["properties"]["distinct_id"] for e in events} == {"alice", "bob"}
    manifest = json.loads(archive.read("manifest.json", pwd=secret))
    assert manifest["distinct_ids"] == ["alice", "bob"]
    assert manifest["compliance_type"] == "gdpr"


async def test_ccpa_categories_export(
    api: Api, admin: SandboxAdmin, client: httpx.AsyncClient
) -> None:
    """'disclosure_type (retrievals, CCPA only): Data (everything), Categories (column headers
    only), Sources'; 'A CCPA export covers only the previous year'."""
    body = {"distinct_ids": ["c"], "compliance_type": "CCPA", "disclosure_type": "Categories"}
    link = await _finished_retrieval(api, admin, body)
    archive = zipfile.ZipFile(io.BytesIO((await client.get(link)).content))
    secret = PROJECTS[Region.EU][2].encode()
    assert sorted(archive.namelist()) == ["categories.json", "manifest.json"]
    manifest = json.loads(archive.read("manifest.json", pwd=secret))
    span = datetime.fromisoformat(manifest["to"]) - datetime.fromisoformat(manifest["from"])
    assert span.days == 365
    assert "events" in json.loads(archive.read("categories.json", pwd=secret))


async def test_export_link_tampered_or_expired(
    api: Api, admin: SandboxAdmin, client: httpx.AsyncClient
) -> None:
    """'The callback docs say the link is valid 14 days after completion': a tampered signature is
    refused (403), a link past its expiry answers 410."""
    link = await _finished_retrieval(api, admin, {"distinct_ids": ["x"]})
    parsed = urlparse(link)
    query = {k: v[0] for k, v in parse_qs(parsed.query).items()}
    base = f"{parsed.scheme}://{parsed.netloc}{parsed.path}"
    tampered = {**query, "signature": "0" * 64}
    assert (await client.get(f"{base}?{urlencode(tampered)}")).status_code == 403
    longer = {**query, "expires": str(int(query["expires"]) + 86400)}
    assert (await client.get(f"{base}?{urlencode(longer)}")).status_code == 403
    assert (await client.get(base)).status_code == 403
    await admin.advance_clock(13 * 86400)
    assert (await client.get(link)).status_code == 200
    await admin.advance_clock(2 * 86400)
    expired = await client.get(link)
    assert expired.status_code == 410
    assert expired.json()["status"] == "error"


async def test_export_without_api_secret_is_plain_zip(
    make_sandbox: MakeSandbox, client: httpx.AsyncClient
) -> None:
    """'The export is a ZIP protected with the project's API secret as password': a project
    configured without a secret gets an unencrypted ZIP."""
    clock = FakeClock()
    project = {"token": "nosecret", "region": "IN", "oauth_tokens": ["o"]}
    api = Api(
        await make_sandbox(fast_config(rate_limit_per_s=0, projects=[project]), clock), client
    )
    response = await api.create(
        "retrieval", Region.IN, token="nosecret", headers=api.auth(Region.IN, "o")
    )
    tracking_id = response.json()["results"]["task_id"]
    clock.advance(10)
    status = await client.get(
        api.url(Region.IN, "retrieval", tracking_id),
        params={"token": "nosecret"},
        headers=api.auth(Region.IN, "o"),
    )
    archive = zipfile.ZipFile(
        io.BytesIO((await client.get(status.json()["results"]["result"])).content)
    )
    assert json.loads(archive.read("manifest.json"))["distinct_ids"] == ["user-1"]


# --- fault injection ----------------------------------------------------------------------------


async def test_fault_5xx_does_nothing(api: Api, admin: SandboxAdmin) -> None:
    """'429 and 5xx back off with jitter' (design): an injected 5xx carries the error envelope and
    creates no task."""
    await admin.set_faults(error_rate=1.0, error_statuses=[503])
    response = await api.create("deletion")
    assert response.status_code == 503
    assert response.json()["status"] == "error"
    assert await admin.tasks() == []
    calls = await admin.calls()
    assert calls["calls"][-1]["fault"] == "error"


async def test_fault_burst_429(api: Api, admin: SandboxAdmin) -> None:
    """'over it -> HTTP 429': a burst makes exactly the next N calls 429, without Retry-After."""
    await admin.set_faults(burst_429=3)
    statuses = []
    for _ in range(4):
        response = await api.create("deletion")
        statuses.append(response.status_code)
        if response.status_code == 429:
            assert "Retry-After" not in response.headers
    assert statuses == [429, 429, 429, 200]


async def test_fault_malformed_body(api: Api, admin: SandboxAdmin) -> None:
    """'Envelope: {"status": "ok", "results": ...}': a malformed-body fault answers 200 with a body
    that is not JSON."""
    await admin.set_faults(malformed_rate=1.0)
    response = await api.create("deletion")
    assert response.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        response.json()


async def test_fault_dropped_connection(api: Api, admin: SandboxAdmin) -> None:
    """Fault injection: a dropped connection closes the transport without an answer; nothing is
    done."""
    await admin.set_faults(drop_rate=1.0)
    with pytest.raises(httpx.TransportError):
        await api.create("deletion")
    assert await admin.tasks() == []


async def test_fault_lost_response(api: Api, admin: SandboxAdmin) -> None:
    """'Record the intent to submit before calling Mixpanel and the tracking id right after'
    (design): a lost response means the task WAS created but the client never hears of it."""
    await admin.set_faults(lost_response_rate=1.0)
    with pytest.raises(httpx.TransportError):
        await api.create("deletion", ids=["lost"])
    (task,) = await admin.tasks()
    assert task["distinct_ids"] == ["lost"]


async def test_fault_latency(api: Api, admin: SandboxAdmin, client: httpx.AsyncClient) -> None:
    """Fault injection: added latency delays GDPR API answers, never the admin endpoints."""
    await admin.set_faults(latency_seconds=0.3)
    start = time.monotonic()
    assert (await api.create("deletion")).status_code == 200
    assert time.monotonic() - start >= 0.3
    start = time.monotonic()
    await admin.tasks()
    assert time.monotonic() - start < 0.3


async def test_faults_from_config_are_seeded(
    make_sandbox: MakeSandbox, client: httpx.AsyncClient
) -> None:
    """Fault injection by configuration, seeded: two sandboxes with the same seed fail the same
    calls."""
    outcomes = []
    for _ in range(2):
        config = fast_config(rate_limit_per_s=0, faults={"error_rate": 0.5, "seed": 7})
        api = Api(await make_sandbox(config), client)
        outcomes.append([(await api.create("deletion")).status_code for _ in range(12)])
    assert outcomes[0] == outcomes[1]
    assert set(outcomes[0]) <= {200, 500, 502, 503}
    assert 200 in outcomes[0]
    assert len(set(outcomes[0])) > 1


# --- admin --------------------------------------------------------------------------------------


async def test_calls_log(api: Api, admin: SandboxAdmin) -> None:
    """Inspection: every call with time, region, project token, operation, ids, status and
    tracking id."""
    tracking_id = await api.create_id("deletion", Region.EU, ids=["a", "b"])
    await api.status("deletion", tracking_id, Region.EU)
    await api.create("retrieval", Region.US, headers={})
    calls = await admin.calls()
    assert calls["count"] == 3
    assert calls["by_status"] == {"200": 2, "401": 1}
    first, second, third = calls["calls"]
    assert first["region"] == "EU"
    assert first["project_token"] == PROJECTS[Region.EU][0]
    assert first["operation"] == "create_deletion"
    assert first["distinct_id_count"] == 2
    assert first["distinct_ids"] == ["a", "b"]
    assert first["status"] == 200
    assert first["tracking_id"] == tracking_id
    assert first["time"].endswith("Z")
    assert second["operation"] == "deletion_status"
    assert second["tracking_id"] == tracking_id
    assert third["operation"] == "create_retrieval"
    assert third["status"] == 401
    only_eu = await admin.calls(project=PROJECTS[Region.EU][0], operation="create_deletion")
    assert only_eu["count"] == 1
    assert (await admin.calls(since=str(first["seq"])))["count"] == 2


async def test_ids_report_counts_deletions(api: Api, admin: SandboxAdmin) -> None:
    """Inspection: per distinct id, how many deletion tasks covered it and how many succeeded (what
    'every id deleted exactly once' is asserted from)."""
    first = await api.create_id("deletion", ids=["a", "b"])
    await api.create_id("deletion", ids=["b"])
    await api.create_id("retrieval", ids=["a"])
    await admin.force_state(first, "SUCCESS")
    report = (await admin.ids())[PROJECTS[Region.US][0]]
    assert report["a"]["deletion_tasks"] == 1
    assert report["a"]["deletions_succeeded"] == 1
    assert report["a"]["retrieval_tasks"] == 1
    assert report["b"]["deletion_tasks"] == 2
    assert report["b"]["deletions_succeeded"] == 1
    assert report["b"]["deletion_states"] == {"SUCCESS": 1, "PENDING": 1}


async def test_tasks_and_force_state(
    api: Api, admin: SandboxAdmin, client: httpx.AsyncClient
) -> None:
    """Admin: list tasks with filters, read one, force a state (held, or resuming the life
    cycle)."""
    deletion = await api.create_id("deletion", ids=["a"])
    await api.create_id("retrieval", Region.IN, ids=["b"])
    assert len(await admin.tasks()) == 2
    assert [t["tracking_id"] for t in await admin.tasks(kind="deletion")] == [deletion]
    assert len(await admin.tasks(project=PROJECTS[Region.IN][0])) == 1
    task = (await client.get(f"{admin.url}/tasks/{deletion}")).json()["task"]
    assert task["state"] == "PENDING"
    assert (await admin.force_state(deletion, "STARTED"))["state"] == "STARTED"
    await admin.advance_clock(100)
    assert await api.state("deletion", deletion) == "STARTED"  # held
    await admin.force_state(deletion, "STARTED", hold=False)
    await admin.advance_clock(100)
    assert await api.state("deletion", deletion) == "SUCCESS"  # resumed
    assert len(await admin.tasks(state="SUCCESS", kind="deletion")) == 1
    bad = await client.post(f"{admin.url}/tasks/{deletion}/state", json={"state": "DONE"})
    assert bad.status_code == 400
    missing = await client.post(f"{admin.url}/tasks/nope/state", json={"state": "SUCCESS"})
    assert missing.status_code == 404


async def test_register_project_at_runtime(
    api: Api, client: httpx.AsyncClient, sandbox: RunningSandbox
) -> None:
    """'A project lives in exactly one region': POST /_sandbox/projects registers one, usable at
    once on its region's port only; listings never show OAuth tokens or secrets."""
    project = {
        "token": "rt",
        "region": "IN",
        "oauth_tokens": [{"token": "rt-oauth-secret-value"}],
        "api_secret": "rt-api-secret-value",
    }
    response = await client.post(f"{sandbox.admin_url}/projects", json=project)
    assert response.status_code == 201
    headers = api.auth(Region.IN, "rt-oauth-secret-value")
    assert (await api.create("deletion", Region.IN, token="rt", headers=headers)).status_code == 200
    assert (await api.create("deletion", Region.US, token="rt", headers=headers)).status_code == 403
    listing = (await client.get(f"{sandbox.admin_url}/projects")).text
    assert "rt-oauth-secret-value" not in listing
    assert "rt-api-secret-value" not in listing
    invalid = await client.post(
        f"{sandbox.admin_url}/projects", json={"token": "x", "region": "MARS"}
    )
    assert invalid.status_code == 400


async def test_reset_and_health_on_every_port(
    api: Api, admin: SandboxAdmin, client: httpx.AsyncClient, sandbox: RunningSandbox
) -> None:
    """Admin: healthz and reset, served under /_sandbox/ on every region's port."""
    await api.create_id("deletion")
    for origin in sandbox.origins.values():
        assert (await client.get(f"{origin}/_sandbox/healthz")).json() == {"status": "ok"}
        assert (await client.get(f"{origin}/_sandbox/tasks")).json()["count"] == 1
    await admin.set_faults(error_rate=1.0)
    await admin.reset()
    assert await admin.tasks() == []
    assert (await admin.calls())["count"] == 0
    assert (await client.get(f"{admin.url}/faults")).json()["faults"]["error_rate"] == 0.0
    index = (await client.get(f"{admin.url}/")).json()
    assert index["base_urls"] == json.loads(sandbox.urls_json())


async def test_settings_change_at_runtime(
    api: Api, client: httpx.AsyncClient, sandbox: RunningSandbox
) -> None:
    """'1 request per second ...': limits (and other settings) can change at runtime; a reset
    restores the configured ones."""
    url = f"{sandbox.admin_url}/settings"
    response = await client.post(url, json={"limits": {"rate_limit_per_s": 0.5}})
    assert response.json()["settings"]["limits"]["rate_limit_per_s"] == 0.5
    assert (await api.create("deletion")).status_code == 200
    assert (await api.create("deletion")).status_code == 429
    assert (await client.post(url, json={"limits": {"rate_limit_per_s": -1}})).status_code == 400
    assert (await client.post(url, json={"bogus": {}})).status_code == 400
    await client.post(f"{sandbox.admin_url}/reset")
    assert (await client.get(url)).json()["settings"]["limits"]["rate_limit_per_s"] == 0
    assert (await api.create("deletion")).status_code == 200
    assert (await api.create("deletion")).status_code == 200


async def test_oauth_tokens_never_logged(
    api: Api, admin: SandboxAdmin, caplog: pytest.LogCaptureFixture
) -> None:
    """'The OAuth token ... never appears in logs'; 'Distinct ids are personal data: logs show
    counts or hashes' (design invariant 5, which the sandbox keeps as well)."""
    caplog.set_level(logging.DEBUG)
    tracking_id = await api.create_id("deletion", ids=["secret-person@example.com"])
    await api.status("deletion", tracking_id)
    await api.create("deletion", headers=api.auth(Region.US, "some-wrong-oauth-token"))
    text = caplog.text
    assert "create_deletion" in text
    for secret in (PROJECTS[Region.US][1], "some-wrong-oauth-token", "secret-person@example.com"):
        assert secret not in text
    assert PROJECTS[Region.US][1] not in json.dumps(await admin.calls())
