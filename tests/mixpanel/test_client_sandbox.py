"""MixpanelClient against the real simulator over real HTTP: every path and every error."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import pytest_asyncio

from mixpanel_dsr.mixpanel import (
    DEFAULT_INTERVAL,
    AmbiguousCreateError,
    AuthenticationError,
    ComplianceType,
    ConflictError,
    DisclosureType,
    InvalidRequestError,
    MixpanelClient,
    MixpanelError,
    NotCancellableError,
    NotFoundError,
    RateLimitedError,
    Region,
    RequestBudget,
    RetryPolicy,
    TaskState,
    TransientError,
    default_registry,
)
from mixpanel_dsr.sandbox import RunningSandbox
from tests.sandbox_fixtures import PROJECTS, MakeSandbox, SandboxAdmin, fast_config

IDS = ["alice@example.com", "user-bob-42", "carol"]

#: Fast retries for tests that are not about timing.
FAST_RETRY = RetryPolicy(max_attempts=4, base_delay=0.01, max_delay=0.05, rate_limit_delay=0.05)

ClientFactory = Callable[..., MixpanelClient]


@pytest_asyncio.fixture
async def admin(sandbox: RunningSandbox) -> AsyncIterator[SandboxAdmin]:
    a = SandboxAdmin(sandbox)
    yield a
    await a.aclose()


@pytest_asyncio.fixture
async def make_client(sandbox: RunningSandbox) -> AsyncIterator[ClientFactory]:
    clients: list[MixpanelClient] = []

    def make(region: Region = Region.US, **kwargs: Any) -> MixpanelClient:
        token, oauth, _ = PROJECTS[region]
        kwargs.setdefault("project_token", token)
        kwargs.setdefault("oauth_token", oauth)
        kwargs.setdefault("region_base_urls", sandbox.base_urls)
        kwargs.setdefault("budget", RequestBudget(0))
        kwargs.setdefault("retry", FAST_RETRY)
        kwargs.setdefault("timeout", 5.0)
        client = MixpanelClient(region=region, **kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


async def api_calls(admin: SandboxAdmin, **filters: str) -> list[dict[str, Any]]:
    return list((await admin.calls(**filters))["calls"])


# -- deletions -----------------------------------------------------------------------------


async def test_deletion_lifecycle(
    make_client: ClientFactory, admin: SandboxAdmin, sandbox: RunningSandbox
) -> None:
    client = make_client()
    task = await client.create_deletion(IDS, ComplianceType.CCPA)
    assert task.tracking_id.isdigit()
    status = await client.deletion_status(task.tracking_id)
    assert status.state is TaskState.PENDING
    assert status.tracking_id == task.tracking_id
    assert status.distinct_id_count == 3
    assert status.compliance_type is ComplianceType.CCPA
    assert status.project_id is not None
    await admin.advance_clock(2.0)
    status = await client.deletion_status(task.tracking_id)
    assert status.state is TaskState.SUCCESS
    assert status.result_link is None
    calls = await api_calls(admin)
    assert [c["operation"] for c in calls] == [
        "create_deletion",
        "deletion_status",
        "deletion_status",
    ]
    assert calls[0]["distinct_ids"] == IDS
    assert all(c["status"] in (200, 201) for c in calls)


async def test_create_list_shape_uuid_ids_and_201(
    make_client: ClientFactory, sandbox: RunningSandbox
) -> None:
    sandbox.state.config = fast_config(
        rate_limit_per_s=0,
        responses={"create_shape": "list", "tracking_id_style": "uuid", "create_status": 201},
    )
    client = make_client()
    task = await client.create_deletion(IDS)
    assert len(task.tracking_id) == 36
    assert task.state is TaskState.PENDING
    assert task.compliance_type is ComplianceType.GDPR
    assert task.distinct_id_count == 3
    assert (await client.deletion_status(task.tracking_id)).state is TaskState.PENDING


async def test_cancel_deletion_then_revoked(
    make_client: ClientFactory, admin: SandboxAdmin
) -> None:
    client = make_client()
    task = await client.create_deletion(IDS)
    await client.cancel_deletion(task.tracking_id)
    assert (await client.deletion_status(task.tracking_id)).state is TaskState.REVOKED
    # Cancelling again is idempotent in the default sandbox (204).
    await client.cancel_deletion(task.tracking_id)


async def test_cancel_started_deletion_not_cancellable(
    make_client: ClientFactory, admin: SandboxAdmin
) -> None:
    client = make_client()
    task = await client.create_deletion(IDS)
    await admin.force_state(task.tracking_id, "STARTED")
    with pytest.raises(NotCancellableError) as info:
        await client.cancel_deletion(task.tracking_id)
    assert info.value.status_code == 405
    assert "STARTED" in str(info.value)
    assert info.value.attempts == 1


async def test_cancel_unknown_task_not_found(make_client: ClientFactory) -> None:
    with pytest.raises(NotFoundError) as info:
        await make_client().cancel_deletion("123")
    assert info.value.status_code == 404


async def test_status_unknown_task(make_client: ClientFactory, sandbox: RunningSandbox) -> None:
    client = make_client()
    assert (await client.deletion_status("999")).state is TaskState.NOT_FOUND
    sandbox.state.config = fast_config(rate_limit_per_s=0, responses={"not_found_status": 404})
    # The same state when the host says it with HTTP 404.
    assert (await client.deletion_status("999")).state is TaskState.NOT_FOUND


async def test_unknown_state_reported_by_sandbox(
    make_client: ClientFactory, admin: SandboxAdmin
) -> None:
    client = make_client()
    task = await client.create_deletion(IDS)
    await admin.force_state(task.tracking_id, "UNKNOWN")
    status = await client.deletion_status(task.tracking_id)
    assert status.state is TaskState.UNKNOWN
    assert status.known_state


# -- retrievals ---------------------------------------------------------------------------


async def test_retrieval_lifecycle_and_link(
    make_client: ClientFactory, admin: SandboxAdmin, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client = make_client(Region.EU)
    task = await client.create_retrieval(["alice@example.com"], "CCPA", DisclosureType.SOURCES)
    assert task.kind == "retrieval"
    status = await client.retrieval_status(task.tracking_id)
    assert status.state is TaskState.PENDING
    assert status.result_link is None
    await admin.advance_clock(2.0)
    status = await client.retrieval_status(task.tracking_id)
    assert status.state is TaskState.SUCCESS
    assert status.result_link is not None
    link = status.result_link.get_secret_value()
    assert link not in repr(status)
    for rec in caplog.records:
        assert link not in rec.getMessage()
    async with httpx.AsyncClient() as http:
        download = await http.get(link)
    assert download.status_code == 200
    assert download.content[:2] == b"PK"
    (view,) = await admin.tasks(kind="retrieval")
    assert view["disclosure_type"] == "Sources"
    assert view["compliance_type"] == "CCPA"


async def test_gdpr_retrieval_sends_no_disclosure_type(
    make_client: ClientFactory, admin: SandboxAdmin
) -> None:
    await make_client().create_retrieval(IDS)
    (view,) = await admin.tasks(kind="retrieval")
    assert view["compliance_type"] == "GDPR"
    assert view["disclosure_type"] is None


async def test_outstanding_scan_limit_is_rate_limited(
    make_client: ClientFactory, sandbox: RunningSandbox
) -> None:
    sandbox.state.config = fast_config(rate_limit_per_s=0, limits={"scan_budget_days": 1000})
    client = make_client(retry=RetryPolicy(max_attempts=2, base_delay=0.01, rate_limit_delay=0.01))
    await client.create_retrieval(["a"])
    with pytest.raises(RateLimitedError) as info:
        await client.create_retrieval(["b"])
    assert "outstanding retrievals" in str(info.value)
    assert info.value.attempts == 2


# -- region routing -----------------------------------------------------------------------


@pytest.mark.parametrize("region", list(Region))
async def test_each_region_only_reaches_its_port(
    make_client: ClientFactory, admin: SandboxAdmin, sandbox: RunningSandbox, region: Region
) -> None:
    client = make_client(region)
    assert client.base_url == sandbox.base_urls[region]
    task = await client.create_deletion(IDS)
    await client.deletion_status(task.tracking_id)
    await client.cancel_deletion(task.tracking_id)
    calls = await api_calls(admin)
    assert len(calls) == 3
    port = sandbox.ports[region]
    for call in calls:
        assert call["region"] == region.value
        assert call["host"].endswith(f":{port}")
        assert call["status"] < 300


async def test_project_at_wrong_region_is_refused(
    make_client: ClientFactory, admin: SandboxAdmin
) -> None:
    eu_token, eu_oauth, _ = PROJECTS[Region.EU]
    client = make_client(Region.US, project_token=eu_token, oauth_token=eu_oauth)
    with pytest.raises(AuthenticationError) as info:
        await client.create_deletion(IDS)
    assert info.value.status_code == 403
    (call,) = await api_calls(admin)
    assert call["region"] == "US"
    assert not await admin.tasks()


# -- authentication -------------------------------------------------------------------------


async def test_wrong_oauth_token_403(make_client: ClientFactory, admin: SandboxAdmin) -> None:
    client = make_client(oauth_token="not-the-token-xyz")
    with pytest.raises(AuthenticationError) as info:
        await client.deletion_status("1")
    assert info.value.status_code == 403
    assert "not valid" in str(info.value)
    assert "not-the-token-xyz" not in str(info.value)
    assert info.value.attempts == 1


async def test_wrong_oauth_token_401(make_client: ClientFactory, sandbox: RunningSandbox) -> None:
    sandbox.state.config = fast_config(rate_limit_per_s=0, responses={"invalid_oauth_status": 401})
    with pytest.raises(AuthenticationError) as info:
        await make_client(oauth_token="nope-nope").create_deletion(IDS)
    assert info.value.status_code == 401


async def test_expired_oauth_token(make_client: ClientFactory, sandbox: RunningSandbox) -> None:
    admin = SandboxAdmin(sandbox)
    try:
        response = await admin._client.post(
            f"{admin.url}/projects",
            json={
                "token": "tok-expired",
                "region": "US",
                "oauth_tokens": [{"token": "old-oauth", "expires_at": "2000-01-01T00:00:00Z"}],
            },
        )
        assert response.status_code == 201
    finally:
        await admin.aclose()
    client = make_client(project_token="tok-expired", oauth_token="old-oauth")
    with pytest.raises(AuthenticationError, match="expired"):
        await client.create_deletion(IDS)


async def test_unknown_project(make_client: ClientFactory, sandbox: RunningSandbox) -> None:
    client = make_client(project_token="no-such-project")
    with pytest.raises(AuthenticationError) as info:
        await client.create_deletion(IDS)
    assert info.value.status_code == 403
    assert "project not found" in str(info.value)
    sandbox.state.config = fast_config(
        rate_limit_per_s=0, responses={"unknown_project_status": 404}
    )
    with pytest.raises(NotFoundError):
        await client.create_deletion(IDS)
    # A status call cannot tell an unknown project from an unknown tracking id at this host.
    assert (await client.deletion_status("1")).state is TaskState.NOT_FOUND


async def test_rotated_token_used_without_new_client(
    make_client: ClientFactory, admin: SandboxAdmin
) -> None:
    current = {"token": "stale-token"}

    async def read_secret() -> str:
        return current["token"] + "\n"

    client = make_client(oauth_token=read_secret)
    with pytest.raises(AuthenticationError):
        await client.create_deletion(IDS)
    current["token"] = PROJECTS[Region.US][1]
    task = await client.create_deletion(IDS)
    assert (await client.deletion_status(task.tracking_id)).state is TaskState.PENDING


async def test_verify_credentials(make_client: ClientFactory, admin: SandboxAdmin) -> None:
    await make_client().verify_credentials()
    with pytest.raises(AuthenticationError):
        await make_client(oauth_token="bad").verify_credentials()
    assert not await admin.tasks()


# -- request validation ---------------------------------------------------------------------


async def test_too_many_ids_400(make_client: ClientFactory, admin: SandboxAdmin) -> None:
    response = await admin._client.post(
        f"{admin.url}/projects",
        json={
            "token": "tok-small",
            "region": "US",
            "id_limit": 2,
            "oauth_tokens": ["small-oauth"],
        },
    )
    assert response.status_code == 201
    client = make_client(project_token="tok-small", oauth_token="small-oauth")
    with pytest.raises(InvalidRequestError) as info:
        await client.create_deletion(IDS)
    err = info.value
    assert err.status_code == 400
    assert "too many distinct_ids" in str(err)
    assert err.attempts == 1
    assert not await admin.tasks()
    # Within the project's limit it works.
    await client.create_deletion(IDS[:2])


# -- rate limit and budget ----------------------------------------------------------------


async def test_429_without_budget_then_retry_succeeds(make_sandbox: MakeSandbox) -> None:
    sandbox = await make_sandbox(fast_config(rate_limit_per_s=1.0))
    token, oauth, _ = PROJECTS[Region.US]
    admin = SandboxAdmin(sandbox)
    common: dict[str, Any] = {
        "project_token": token,
        "oauth_token": oauth,
        "region_base_urls": sandbox.base_urls,
    }
    no_retry = MixpanelClient(budget=RequestBudget(0), retry=RetryPolicy(max_attempts=1), **common)
    try:
        task = await no_retry.create_deletion(IDS)
        with pytest.raises(RateLimitedError) as info:
            await no_retry.deletion_status(task.tracking_id)
        assert info.value.status_code == 429
        assert info.value.retryable
        # With retries, the 429 pauses the budget and the call gets through after the pause.
        budget = RequestBudget(0)
        retrying = MixpanelClient(
            budget=budget,
            retry=RetryPolicy(max_attempts=6, base_delay=0.1, rate_limit_delay=0.4),
            **common,
        )
        await asyncio.sleep(1.05)
        await retrying.deletion_status(task.tracking_id)  # accepted: a second has passed
        status = await retrying.deletion_status(task.tracking_id)  # 429 first, then accepted
        assert status.tracking_id == task.tracking_id
        calls = await api_calls(admin)
        assert [c["status"] for c in calls][:2] == [200, 429]
        assert 429 in [c["status"] for c in calls[3:]]
        assert calls[-1]["status"] == 200
        await retrying.aclose()
    finally:
        await no_retry.aclose()
        await admin.aclose()


async def test_default_budget_never_hits_429(make_sandbox: MakeSandbox) -> None:
    """Mixed calls from two clients of one project, concurrently: the shared default budget
    (DEFAULT_INTERVAL apart) keeps every one of them under the sandbox's 1 request/s."""
    sandbox = await make_sandbox(fast_config(rate_limit_per_s=1.0, state_seconds=60))
    token, oauth, _ = PROJECTS[Region.US]
    admin = SandboxAdmin(sandbox)
    default_registry.clear()
    a = MixpanelClient(project_token=token, oauth_token=oauth, region_base_urls=sandbox.base_urls)
    b = MixpanelClient(project_token=token, oauth_token=oauth, region_base_urls=sandbox.base_urls)
    try:
        assert a.budget is b.budget
        assert a.budget.interval == DEFAULT_INTERVAL
        start = time.monotonic()
        t1, _ = await asyncio.gather(a.create_deletion(IDS[:1]), b.create_retrieval(IDS[1:]))
        await asyncio.gather(a.deletion_status(t1.tracking_id), b.cancel_deletion(t1.tracking_id))
        elapsed = time.monotonic() - start
        calls = await api_calls(admin)
        assert len(calls) == 4
        assert all(c["status"] < 300 for c in calls), [c["status"] for c in calls]
        assert elapsed >= 3 * DEFAULT_INTERVAL * 0.95
        ats = sorted(c["at"] for c in calls)
        assert all(y - x >= 1.0 for x, y in itertools.pairwise(ats))
    finally:
        await a.aclose()
        await b.aclose()
        await admin.aclose()
        default_registry.clear()


# -- 409 conflicts -----------------------------------------------------------------------------


async def test_409_conflict_attributes(make_client: ClientFactory, sandbox: RunningSandbox) -> None:
    sandbox.state.config = fast_config(rate_limit_per_s=0, limits={"conflict_409": True})
    client = make_client()
    first = await client.create_deletion(IDS[:2])
    with pytest.raises(ConflictError) as info:
        await client.create_deletion(IDS[1:])
    err = info.value
    assert err.status_code == 409
    assert err.conflicting_distinct_ids == (IDS[1],)
    assert err.conflicting_task_ids == (first.tracking_id,)
    assert IDS[1] not in str(err)
    assert first.tracking_id not in str(err)
    assert err.attempts == 1
    assert len(sandbox.state.tasks) == 1


# -- faults: retries and ambiguous creates ------------------------------------------------


async def test_5xx_on_create_retried_creates_exactly_one_task(
    make_client: ClientFactory, admin: SandboxAdmin
) -> None:
    await admin.set_faults(error_rate=0.6, error_statuses=[500, 503], seed=7)
    client = make_client(retry=RetryPolicy(max_attempts=20, base_delay=0.005, max_delay=0.01))
    task = await client.create_deletion(IDS)
    calls = await api_calls(admin)
    statuses = [c["status"] for c in calls]
    assert statuses[-1] == 200
    assert set(statuses[:-1]) <= {500, 503}
    assert len(statuses) >= 2, "seed 7 should fail at least once"
    tasks = await admin.tasks()
    assert [t["tracking_id"] for t in tasks] == [task.tracking_id]


async def test_5xx_on_status_until_max_attempts(
    make_client: ClientFactory, admin: SandboxAdmin
) -> None:
    await admin.set_faults(error_rate=1.0, error_statuses=[503])
    with pytest.raises(TransientError) as info:
        await make_client().deletion_status("1")
    assert info.value.status_code == 503
    assert info.value.attempts == FAST_RETRY.max_attempts
    assert len(await api_calls(admin)) == FAST_RETRY.max_attempts


async def test_burst_429_on_create_retried(make_client: ClientFactory, admin: SandboxAdmin) -> None:
    await admin.set_faults(burst_429=2)
    task = await make_client().create_deletion(IDS)
    assert [c["status"] for c in await api_calls(admin)] == [429, 429, 200]
    assert len(await admin.tasks()) == 1
    assert task.tracking_id


@pytest.mark.parametrize("status", [502, 504])
async def test_gateway_error_on_create_is_ambiguous(
    make_client: ClientFactory, admin: SandboxAdmin, status: int
) -> None:
    await admin.set_faults(error_rate=1.0, error_statuses=[status])
    with pytest.raises(AmbiguousCreateError) as info:
        await make_client().create_deletion(IDS)
    assert info.value.reason == f"HTTP {status}"
    assert len(await api_calls(admin)) == 1


async def test_dropped_connection_on_create_is_ambiguous(
    make_client: ClientFactory, admin: SandboxAdmin
) -> None:
    await admin.set_faults(drop_rate=1.0)
    with pytest.raises(AmbiguousCreateError) as info:
        await make_client().create_deletion(IDS)
    assert info.value.__cause__ is None
    assert info.value.__context__ is None
    assert len(await api_calls(admin)) == 1  # not retried


async def test_lost_response_on_create_is_ambiguous_and_the_task_exists(
    make_client: ClientFactory, admin: SandboxAdmin
) -> None:
    """Why an ambiguous create must not be retried: the sandbox did create the task."""
    await admin.set_faults(lost_response_rate=1.0)
    with pytest.raises(AmbiguousCreateError):
        await make_client().create_retrieval(IDS)
    assert len(await api_calls(admin)) == 1
    assert len(await admin.tasks()) == 1


async def test_read_timeout_on_create_is_ambiguous(
    make_client: ClientFactory, admin: SandboxAdmin
) -> None:
    await admin.set_faults(latency_seconds=0.5)
    sent: list[str] = []

    async def count(request: httpx.Request) -> None:
        sent.append(request.method)

    async with httpx.AsyncClient(event_hooks={"request": [count]}) as http:
        client = make_client(timeout=httpx.Timeout(0.15, connect=2.0), http=http)
        with pytest.raises(AmbiguousCreateError) as info:
            await client.create_deletion(IDS)
    assert info.value.reason == "ReadTimeout"
    assert sent == ["POST"]  # exactly one request: not retried


async def test_dropped_connection_on_status_retried(
    make_client: ClientFactory, admin: SandboxAdmin
) -> None:
    client = make_client()
    task = await client.create_deletion(IDS)
    await admin.set_faults(drop_rate=0.5, seed=3)
    for _ in range(4):
        assert (await client.deletion_status(task.tracking_id)).state is TaskState.PENDING
    await admin.set_faults(drop_rate=1.0)
    with pytest.raises(TransientError) as info:
        await client.deletion_status(task.tracking_id)
    assert info.value.attempts == FAST_RETRY.max_attempts


async def test_malformed_body(make_client: ClientFactory, admin: SandboxAdmin) -> None:
    client = make_client()
    task = await client.create_deletion(IDS)
    await admin.set_faults(malformed_rate=1.0)
    with pytest.raises(TransientError, match="unreadable"):
        await client.deletion_status(task.tracking_id)
    with pytest.raises(AmbiguousCreateError, match="unreadable"):
        await client.create_deletion(IDS)
    await admin.set_faults(malformed_rate=0.5, seed=1)
    assert (await client.deletion_status(task.tracking_id)).state is TaskState.PENDING


async def test_connection_refused_is_retried_then_transient(sandbox: RunningSandbox) -> None:
    token, oauth, _ = PROJECTS[Region.US]
    client = MixpanelClient(
        project_token=token,
        oauth_token=oauth,
        base_url="http://127.0.0.1:9/api/app",  # discard port: nothing listens
        budget=RequestBudget(0),
        retry=FAST_RETRY,
    )
    try:
        with pytest.raises(TransientError) as info:
            await client.create_deletion(IDS)
        assert not isinstance(info.value, AmbiguousCreateError)
        assert "ConnectError" in str(info.value)
        assert info.value.attempts == FAST_RETRY.max_attempts
    finally:
        await client.aclose()


# -- secrets ---------------------------------------------------------------------------------


async def test_no_bearer_or_ids_in_logs_or_errors(
    make_client: ClientFactory, admin: SandboxAdmin, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    bearer = PROJECTS[Region.US][1]
    client = make_client()
    errors: list[MixpanelError] = []
    task = await client.create_deletion(IDS)
    await admin.force_state(task.tracking_id, "STARTED")
    for fault in ({"drop_rate": 1.0}, {"error_rate": 1.0, "error_statuses": [502]}):
        await admin.set_faults(reset=True, **fault)
        try:
            await client.create_deletion(IDS)
        except MixpanelError as exc:
            errors.append(exc)
    await admin.set_faults(reset=True)
    for call in (
        client.cancel_deletion(task.tracking_id),
        make_client(oauth_token=bearer + "-wrong").create_deletion(IDS),
    ):
        try:
            await call
        except MixpanelError as exc:
            errors.append(exc)
    assert len(errors) == 4
    for err in errors:
        for text in (str(err), repr(err)):
            assert bearer not in text
            for i in IDS:
                assert i not in text
        assert err.__cause__ is None
        assert err.__context__ is None
    for rec in caplog.records:
        msg = rec.getMessage()
        assert bearer not in msg
        for i in IDS:
            assert i not in msg
